"""The update of a sampling stage: what the kept candidates are fine-tuned with (``online.loss``).

:data:`UPDATES` is an open registry of updates with a method of their own (``sft``: the
NLL of each kept response); every policy loss of ``alignkit.losses.LOSSES`` is an update
too (:class:`~alignkit.train.preference.PreferenceMethod` over the ranked candidates), so
``online.loss`` names any of them. An update builds the loop's
:class:`~alignkit.train.loop.Method` for a stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignkit.errors import ConfigError

# (hyper-parameters, pad id, reference or None, share_prompt) -> a loop Method
BuildFn = Callable[[dict, int, Any, bool], Any]


@dataclass(frozen=True)
class Update:
    name: str
    build: BuildFn
    needs_reference: bool = False  # the stage passes a reference (per online.reference)
    best_response_only: bool = False  # examples keep their best candidate only (an SFT update)
    hyperparameters: Callable[[], dict[str, Any]] = dict  # the hyper-parameters it takes, with defaults


UPDATES: dict[str, Update] = {}


def register_update(name: str, *, needs_reference: bool = False, best_response_only: bool = False,
                    hyperparameters: Callable[[], dict[str, Any]] = dict) -> Callable[[BuildFn], BuildFn]:
    """Register the decorated ``build(hyper-parameters, pad_id, reference, share_prompt)`` as update ``name``."""
    def wrap(fn: BuildFn) -> BuildFn:
        UPDATES[name] = Update(name, fn, needs_reference, best_response_only, hyperparameters)
        return fn

    return wrap


@register_update("sft", best_response_only=True)
def sft_update(hyperparameters: dict, pad_id: int, reference, share_prompt: bool):
    """NLL of the kept response (RAFT's fine-tuning step)."""
    from alignkit.train.sft import SFTMethod

    return SFTMethod(pad_id, share_prompt)


def _loss_update(name: str) -> Update:
    from alignkit.losses import LOSSES, hyperparameters
    from alignkit.train.preference import PreferenceMethod

    def build(hp: dict, pad_id: int, reference, share_prompt: bool):
        return PreferenceMethod(name, hp, pad_id, reference, share_prompt)

    return Update(name, build, LOSSES[name].needs_reference, hyperparameters=lambda: hyperparameters(name))


def all_updates() -> dict[str, Update]:
    from alignkit.losses import LOSSES

    return {**{n: _loss_update(n) for n, fn in LOSSES.items() if fn.trains == "policy"}, **UPDATES}


def get_update(name: str, args: dict[str, Any], key: str = "online.loss") -> Update:
    """Update ``name``, its hyper-parameters ``args`` checked (errors name ``key`` and ``key``_args)."""
    updates = all_updates()
    if name not in updates:
        raise ConfigError(f"{key}: unknown loss {name!r}; choose one of: {', '.join(sorted(updates))}")
    update = updates[name]
    allowed = update.hyperparameters()
    unknown = sorted(set(args) - set(allowed))
    if unknown and not allowed:
        raise ConfigError(f"{key}_args: the {name} update takes no hyper-parameters")
    if unknown:
        raise ConfigError(f"{key}_args.{unknown[0]}: method {name!r} has no hyper-parameter {unknown[0]!r}; "
                          f"allowed: {', '.join(sorted(allowed))}")
    return update
