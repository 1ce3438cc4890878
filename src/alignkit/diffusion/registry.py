"""Diffusion method name -> loss function, and nothing else decides which method runs.

Each entry is a pure loss (see :mod:`alignkit.diffusion.losses`) tagged with what the trainer must
feed it, so the trainer dispatches on the tags and never on a method's name:

- ``feedback``: what one round of sampled chains becomes, ``"best_of_k"`` (keep the best samples
  by reward: RAFT), ``"advantages"`` (a normalised reward per chain: DDPO) or ``"pairs"`` (a
  preferred and a dispreferred chain per condition from a labeller: D3PO, Diffusion-DPO);
- ``inputs``: the per-example quantity the loss reads, ``"denoising_error"`` (the DDPM loss of
  final images re-noised) or ``"chain_log_prob"`` (per-step log-probs of the sampled chain);
- ``needs_reference``: whether the start model's value of that quantity is needed: ``True``,
  ``False``, or the name of a hyper-parameter when only its non-zero values need it (RAFT's
  ``anchor``), so that a setting that does not read the reference does not pay for it.

Hyper-parameters are the keyword-only arguments with their paper defaults, as in
:mod:`alignkit.losses.registry`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from alignkit.config.ranges import FINITE, NON_NEGATIVE, POSITIVE, Range, as_number
from alignkit.errors import ConfigError

DiffusionLoss = Callable[..., tuple[Any, dict]]
Feedback = Literal["best_of_k", "advantages", "pairs"]
Inputs = Literal["denoising_error", "chain_log_prob"]

DIFFUSION_METHODS: dict[str, DiffusionLoss] = {}


def register_diffusion_method(name: str, *, feedback: Feedback, inputs: Inputs, needs_reference: bool | str):
    """Add ``fn`` to :data:`DIFFUSION_METHODS` under ``name`` with its trainer tags."""

    def wrap(fn: DiffusionLoss) -> DiffusionLoss:
        if name in DIFFUSION_METHODS:
            raise ValueError(f"diffusion method {name!r} registered twice")
        fn.method_name = name  # type: ignore[attr-defined]
        fn.feedback = feedback  # type: ignore[attr-defined]
        fn.inputs = inputs  # type: ignore[attr-defined]
        fn.needs_reference = needs_reference  # type: ignore[attr-defined]
        DIFFUSION_METHODS[name] = fn
        return fn

    return wrap


def get_diffusion_method(name: str) -> DiffusionLoss:
    try:
        return DIFFUSION_METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown diffusion method {name!r}; choose one of: "
                          f"{', '.join(sorted(DIFFUSION_METHODS))}") from None


def diffusion_hyperparameters(name: str) -> dict[str, Any]:
    """The keyword-only hyper-parameters of a diffusion method with their defaults."""
    sig = inspect.signature(get_diffusion_method(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def uses_reference(name: str, hparams: dict[str, Any]) -> bool:
    """Whether method ``name`` with ``hparams`` (the rest at their defaults) reads the start model."""
    needs = get_diffusion_method(name).needs_reference
    if isinstance(needs, str):
        return {**diffusion_hyperparameters(name), **hparams}[needs] != 0
    return needs


def reference_note(name: str) -> str:
    """``reference``, ``reference-free`` or ``reference if <hparam> > 0``, for ``alignkit methods``."""
    needs = get_diffusion_method(name).needs_reference
    if isinstance(needs, str):
        return f"reference if {needs} > 0"
    return "reference" if needs else "reference-free"


# Allowed values of the hyper-parameters, by name (the same name means the same role in every loss).
RANGES: dict[str, Range] = {
    "beta": POSITIVE,  # DPO inverse temperature: 0 trains nothing, < 0 trains against the preferences
    "clip": POSITIVE,  # D3PO's trust region on a step's ratio: 0 would freeze every step
    "clip_range": POSITIVE,  # DDPO's PPO clip
    "adv_clip_max": POSITIVE,
    "anchor": NON_NEGATIVE,  # RAFT's pull to the start model: < 0 would push away from it
}


def check_diffusion_hyperparameters(name: str, given: dict[str, Any], key: str = "loss") -> None:
    """Check ``given`` against what method ``name`` takes, converting numbers in place (YAML reads ``1e-4`` as
    a string); an unknown name, a non-number or a value out of its :data:`RANGES` entry is a ConfigError."""
    allowed = diffusion_hyperparameters(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: diffusion method {name!r} has no hyper-parameter {unknown[0]!r}; "
                          f"allowed: {', '.join(sorted(allowed)) or '(none)'}")
    for hp, value in given.items():
        given[hp] = as_number(f"{key}.{hp}", value, integer=isinstance(allowed[hp], int))
        RANGES.get(hp, FINITE).check(f"{key}.{hp}", given[hp])
