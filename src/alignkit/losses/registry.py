"""Method name -> loss function, and nothing else decides which loss runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from alignkit.config.ranges import FINITE, NON_NEGATIVE, POSITIVE, Range, as_number
from alignkit.errors import ConfigError

LossFn = Callable[..., tuple[Any, dict]]

LOSSES: dict[str, LossFn] = {}


DATA_SHAPES = ("pairs", "ranked", "unpaired")
IMPLICIT_REWARDS = ("ratio", "logp", "mean_logp")


def register_loss(name: str, *, needs_reference: bool, data: str = "pairs", trains: str = "policy",
                  implicit_reward: str = "", mismatched_pairs: bool = False) -> Callable[[LossFn], LossFn]:
    """Add ``fn`` to :data:`LOSSES` under ``name``.

    ``needs_reference`` tells the trainer whether ``RankedBatch.ref_logps`` must be
    filled (a frozen copy, the adapter-disabled base, or cached log-probs). ``data``: the
    rows it is made for, ``pairs`` (chosen vs rejected), ``ranked`` (K scored responses)
    or ``unpaired`` (responses marked desirable or not, KTO); every row of the training
    data is checked for it (:data:`alignkit.data.requirements.NEED_OF_DATA`). ``trains``:
    ``policy`` (a training method of its own, see :mod:`alignkit.train.methods`) or
    ``reward_model`` (a loss of ``method: reward_model``). ``implicit_reward``: the score the loss
    ranks responses by, which evaluation uses for preference accuracy: ``ratio`` (log pi/pi_ref),
    ``logp`` (summed log pi) or ``mean_logp`` (log pi per token: the length-normalised SimPO, ORPO,
    PRO, RRHF); empty: ``ratio`` when the loss needs a reference, else ``logp``.
    ``mismatched_pairs`` asks the trainer for ``RankedBatch.mismatched_log_ratios`` (an extra
    forward of policy and reference on cycled prompt/response pairs).
    """
    implicit_reward = implicit_reward or ("ratio" if needs_reference else "logp")
    if implicit_reward not in IMPLICIT_REWARDS:
        raise ValueError(f"loss {name!r}: implicit_reward must be one of {IMPLICIT_REWARDS}")
    if data not in DATA_SHAPES or trains not in ("policy", "reward_model"):
        raise ValueError(f"loss {name!r}: data must be one of {DATA_SHAPES} and trains policy or reward_model")

    def wrap(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        fn.needs_reference = needs_reference  # type: ignore[attr-defined]
        fn.mismatched_pairs = mismatched_pairs  # type: ignore[attr-defined]
        fn.method_name = name  # type: ignore[attr-defined]
        fn.data, fn.trains = data, trains  # type: ignore[attr-defined]
        fn.implicit_reward = implicit_reward  # type: ignore[attr-defined]
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


# Allowed values of the hyper-parameters, by name (the same name means the same role in every loss).
RANGES: dict[str, Range] = {
    "beta": POSITIVE,  # inverse temperature / regularisation: 0 trains nothing, < 0 trains against the data
    "temperature": POSITIVE,
    "label_smoothing": Range(0, 0.5, high_inclusive=False),  # 0.5 makes both labels equally likely
    "desirable_weight": POSITIVE,
    "undesirable_weight": POSITIVE,
    "alpha": NON_NEGATIVE,
    "gamma": NON_NEGATIVE,
    "delta": NON_NEGATIVE,
    "lam": NON_NEGATIVE,
    "nll_weight": NON_NEGATIVE,
}


def check_hyperparameters(name: str, given: dict[str, Any], key: str = "loss") -> None:
    """Check ``given`` against what loss ``name`` takes, converting values in place.

    Each value must have its default's type (YAML's ``1e-30`` is read as a string and
    becomes the float it means) and lie in its :data:`RANGES` entry; an unknown name,
    a wrong type or a value out of range is a :class:`ConfigError` naming ``key.name``.
    """
    allowed = hyperparameters(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}: method {name!r} has no hyper-parameter {unknown[0]!r}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
    for hp, value in given.items():
        given[hp] = _converted(f"{key}.{hp}", value, allowed[hp])
        if hp in RANGES and not isinstance(allowed[hp], bool):
            RANGES[hp].check(f"{key}.{hp}", given[hp])


def _converted(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        number = as_number(key, value, integer=isinstance(default, int))
        FINITE.check(key, number)
        return number
    return value
