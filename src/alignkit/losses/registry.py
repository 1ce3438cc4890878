"""Method name -> loss function, and nothing else decides which loss runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from alignkit.errors import ConfigError

LossFn = Callable[..., tuple[Any, dict]]

LOSSES: dict[str, LossFn] = {}


DATA_SHAPES = ("pairs", "ranked", "unpaired")


def register_loss(name: str, *, needs_reference: bool, data: str = "pairs",
                  trains: str = "policy") -> Callable[[LossFn], LossFn]:
    """Add ``fn`` to :data:`LOSSES` under ``name``.

    ``needs_reference`` tells the trainer whether ``RankedBatch.ref_logps`` must be
    filled (a frozen copy, the adapter-disabled base, or cached log-probs). ``data``: the
    rows it is made for, ``pairs`` (chosen vs rejected), ``ranked`` (K scored responses)
    or ``unpaired`` (responses marked desirable or not, KTO). ``trains``: ``policy`` (a
    training method of its own, see :mod:`alignkit.train.methods`) or ``reward_model``
    (a loss of ``method: reward_model``).
    """
    if data not in DATA_SHAPES or trains not in ("policy", "reward_model"):
        raise ValueError(f"loss {name!r}: data must be one of {DATA_SHAPES} and trains policy or reward_model")

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        fn.needs_reference = needs_reference  # type: ignore[attr-defined]
        fn.method_name = name  # type: ignore[attr-defined]
        fn.data, fn.trains = data, trains  # type: ignore[attr-defined]
        LOSSES[name] = fn
        return fn

    return wrap


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(sorted(LOSSES))}") from None


def hyperparameters(name: str) -> dict[str, Any]:
    """The keyword-only hyper-parameters of a loss with their paper defaults."""
    sig = inspect.signature(get_loss(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_hyperparameters(name: str, given: dict[str, Any], key: str = "loss") -> None:
    """Raise a :class:`ConfigError` naming any hyper-parameter ``name`` does not take."""
    allowed = hyperparameters(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}: method {name!r} has no hyper-parameter {unknown[0]!r}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
