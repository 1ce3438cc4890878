"""One registry of training methods: everything alignkit knows about a method, in its :class:`MethodSpec`.

``alignkit train`` (:func:`alignkit.train.run.run_train`), ``alignkit compare``, the demo,
``alignkit methods`` and the tests read a method's spec; no method name is compared
anywhere else. Specs come from two places:

- a method with a trainer of its own registers its spec (``sft``, ``reward_model``, or a
  plugin's, e.g. through :func:`alignkit.train.run.register_trainer`);
- a *family* turns the entries of an open registry into specs, so that registering a
  component is registering a method: every policy loss of ``alignkit.losses.LOSSES``
  is a preference method, every selector of ``alignkit.train.selection.SELECTORS`` a
  sampling method, every algorithm of ``alignkit.train.ppo.ALGORITHMS`` an on-policy
  RL method (see :func:`method_family`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import ConfigError

# The modules whose import registers methods and families (the ones beyond the loss registry).
METHOD_MODULES = ("alignkit.train.sft", "alignkit.train.preference", "alignkit.train.reward_model",
                  "alignkit.train.span_reward_model", "alignkit.train.sampling", "alignkit.train.ppo",
                  "alignkit.train.rl_family", "alignkit.diffusion.train", "alignkit.train.preference_model",
                  "alignkit.train.nash_xpo", "alignkit.train.maxmin")


@dataclass(frozen=True)
class StepShape:
    """How a method's optimizer steps relate to training prompts, so that ``alignkit compare`` can
    give every method the same budget: a step takes ``train.batch_size x train.grad_accum x
    batches_per_step(cfg)`` prompts, and ``train.max_steps`` counts the steps of one of
    ``stages(cfg)`` stages."""

    batches_per_step: Callable[[Any], int] = lambda cfg: 1
    stages: Callable[[Any], int] = lambda cfg: 1


def _no_check(cfg) -> None:
    return None


@dataclass(frozen=True)
class MethodSpec:
    """A training method, as every part of alignkit sees it."""

    name: str
    family: str  # sft, reward_model, preference, sampling, rl (or a plugin's own)
    trainer: Callable[[Any], Path]  # fn(Config) -> the run folder
    data: str  # rows it trains on: sft, pairs, ranked, unpaired (KTO), prompts (it samples), spans (span feedback), or a plugin's own
    uses: str = ""  # the registry entry it runs: a loss, a selector or an algorithm ("" for its own trainer)
    needs_reference: bool = False  # the policy's loss reads a reference model
    implicit_reward: str = "logp"  # the policy's implicit reward for preference accuracy: ratio (vs the reference), logp or mean_logp (per token)
    step_shape: StepShape = field(default_factory=StepShape)
    default_update: str = ""  # sampling methods: the update when online.loss is empty (sft or a loss name)
    check: Callable[[Any], None] = _no_check  # fn(Config): raise ConfigError before any model loads
    sections: tuple[str, ...] = ()  # config sections it reads beyond COMMON_SECTIONS (help, saved config.yaml)
    paper: str = ""  # the method's paper, shown by `alignkit methods` (RL algorithms carry theirs in ALGORITHMS)


COMMON_SECTIONS = ("method", "model", "data", "train")  # every method reads these
METHODS: dict[str, MethodSpec] = {}
FAMILIES: list[Callable[[], dict[str, MethodSpec]]] = []


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method with a trainer of its own (a later registration of the name replaces it)."""
    METHODS[spec.name] = spec
    return spec


def method_family(fn: Callable[[], dict[str, MethodSpec]]) -> Callable[[], dict[str, MethodSpec]]:
    """Register ``fn() -> {name: spec}``: the specs of an open registry's entries, read at each lookup so
    that an entry registered later (a user's module) is a method too."""
    FAMILIES.append(fn)
    return fn


def load_methods() -> None:
    """Import the modules that register methods and families."""
    for name in METHOD_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def all_methods() -> dict[str, MethodSpec]:
    """Every method by name: the families' first, then the ones registered with a trainer of their own."""
    load_methods()
    out: dict[str, MethodSpec] = {}
    for family in FAMILIES:
        out.update(family())
    out.update(METHODS)
    return out


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    methods = all_methods()
    if name not in methods:
        raise ConfigError(f"method: unknown method {name!r}; choose one of: {', '.join(sorted(methods))}")
    return methods[name]


def method_sections(name: str) -> tuple[str, ...]:
    """The config sections method ``name`` reads (what ``alignkit config show`` lists and the saved
    ``config.yaml`` keeps); every section of the config for an unknown name."""
    import dataclasses

    from alignkit.config import Config

    methods = all_methods()
    if name not in methods:
        return tuple(f.name for f in dataclasses.fields(Config))
    return COMMON_SECTIONS + methods[name].sections
