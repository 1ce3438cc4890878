"""Diffusion method name -> loss function, and nothing else decides which method runs.

Each entry is a pure loss (see :mod:`alignkit.diffusion.losses`) tagged with what the trainer must
feed it, so the trainer dispatches on the tags and never on a method's name:

- ``feedback``: what one round of sampled chains becomes, ``"best_of_k"`` (keep the best samples
  by reward: RAFT), ``"advantages"`` (a normalised reward per chain: DDPO) or ``"pairs"`` (a
  preferred and a dispreferred chain per condition from a labeller: D3PO, Diffusion-DPO);
- ``inputs``: the per-example quantity the loss reads, ``"denoising_error"`` (the DDPM loss of
  final images re-noised) or ``"chain_log_prob"`` (per-step log-probs of the sampled chain);
- ``needs_reference``: whether the start model's value of that quantity is needed.

Hyper-parameters are the keyword-only arguments with their paper defaults, as in
:mod:`alignkit.losses.registry`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from alignkit.errors import ConfigError

DiffusionLoss = Callable[..., tuple[Any, dict]]
Feedback = Literal["best_of_k", "advantages", "pairs"]
Inputs = Literal["denoising_error", "chain_log_prob"]

DIFFUSION_METHODS: dict[str, DiffusionLoss] = {}


def register_diffusion_method(name: str, *, feedback: Feedback, inputs: Inputs, needs_reference: bool):
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


def check_diffusion_hyperparameters(name: str, given: dict[str, Any], key: str = "loss") -> None:
    allowed = diffusion_hyperparameters(name)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: diffusion method {name!r} has no hyper-parameter {unknown[0]!r}; "
                          f"allowed: {', '.join(sorted(allowed)) or '(none)'}")
