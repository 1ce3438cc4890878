"""One scoring interface for sampling methods (best-of-N, RAFT), PPO and evaluation.

A :class:`Reward` scores a batch of (prompt, response) texts:

- ``score(prompts, responses) -> [N]`` float32: one number per response;
- ``score_segments(prompts, responses)``: dense rewards (Fine-Grained RLHF, Wu et
  al. 2023, https://arxiv.org/abs/2306.01693): per response a list of
  ``(end, value)`` segments sorted by ``end``, where ``end`` is an exclusive
  character position in the response (``response[:end]`` ends the segment).

For every reward, ``score()`` is the sum of its segments: a sequence-level reward
has one segment ending at ``len(response)``, and sequence-level callers of a dense
reward get the sum. The PPO trainer maps each ``end`` to the token holding character
``end - 1`` and puts the value there.

Rewards are built from :class:`RewardSpec` by :func:`build_reward` through the
:data:`REWARDS` registry. Adding a reward is one factory function and one line in
:data:`REWARDS`. Factories import their module lazily, so ``import alignkit.rewards``
needs torch alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from alignkit.config.rewards import RewardSpec
from alignkit.data.schema import as_text  # noqa: F401  (re-exported: rewards and eval import it from here)
from alignkit.errors import ConfigError

Segment = tuple[int, float]  # (exclusive character end in the response, reward value)


class Reward(ABC):
    """Scores (prompt, response) pairs; plain strings (render chat with :func:`as_text`).

    Attributes:
        name: display name, the key of this reward in metrics and mix breakdowns.
        dense: True when :meth:`score_segments` gives more than one segment per response.
    """

    name: str = "reward"
    dense: bool = False

    @abstractmethod
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """One reward per response, ``[N]`` float32 on the CPU."""

    def score_segments(self, prompts: list[str], responses: list[str]) -> list[list[Segment]]:
        """Per response, ``(end, value)`` segments sorted by end; by default one, the sequence score."""
        scores = self.score(prompts, responses).tolist()
        return [[(len(response), float(s))] for response, s in zip(responses, scores)]

    def score_with_details(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The score ``[N]`` and named per-response diagnostics ``{name: [N]}`` (evaluation shows them
        as ``<reward>/<name>``); none by default. A fine-grained model gives its ``error_rate``."""
        return self.score(prompts, responses), {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# Diagnostics (``score_with_details``) where less is better; every reward and every other diagnostic is
# higher-is-better. Reports read a metric off a frontier in its own direction (``lower_is_better``).
LOWER_IS_BETTER_DETAILS = frozenset({"error_rate"})


def lower_is_better(metric: str) -> bool:
    """Whether a reported metric ``<reward>`` or ``<reward>/<diagnostic>`` improves by going down."""
    return "/" in metric and metric.rpartition("/")[2] in LOWER_IS_BETTER_DETAILS


def check_batch(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


def sum_segments(segments: list[list[Segment]]) -> torch.Tensor:
    """The sequence score of dense rewards: the sum of each response's segment values, ``[N]``."""
    return torch.tensor([sum(v for _, v in segs) for segs in segments], dtype=torch.float32)


GRANULARITIES = ("sequence", "sentence")
LENGTH_UNITS = ("words", "chars")


def _need(spec: RewardSpec, key: str, where: str) -> str:
    value = getattr(spec, key)
    if not value:
        raise ConfigError(f"{where}.{key}: required for a reward of kind {spec.kind!r}")
    return value


def _sequence_only(spec: RewardSpec, where: str) -> None:
    if spec.granularity != "sequence":
        raise ConfigError(
            f"{where}.granularity: kind {spec.kind!r} has sequence rewards only; "
            "dense ('sentence') rewards are vader, function and span_model"
        )


def _vader(spec: RewardSpec, where: str) -> Reward:
    from alignkit.rewards.vader import VaderReward

    return VaderReward(granularity=spec.granularity, name=spec.name or "vader")


def _length(spec: RewardSpec, where: str) -> Reward:
    from alignkit.rewards.simple import LengthReward

    _sequence_only(spec, where)
    if spec.unit not in LENGTH_UNITS:
        raise ConfigError(f"{where}.unit: {spec.unit!r} is not one of: {', '.join(LENGTH_UNITS)}")
    return LengthReward(unit=spec.unit, name=spec.name or "length")


def _function(spec: RewardSpec, where: str) -> Reward:
    from alignkit.rewards.simple import FunctionReward

    target = _need(spec, "function", where)
    return FunctionReward(
        target, name=spec.name or target.rpartition(":")[2], dense=spec.granularity == "sentence"
    )


def _model(spec: RewardSpec, where: str) -> Reward:
    from alignkit.rewards.model import ModelReward

    _sequence_only(spec, where)
    path = _need(spec, "path", where)
    return ModelReward.from_path(
        path, name=spec.name or Path(path).name, batch_size=spec.batch_size, max_length=spec.max_length
    )


def _span_model(spec: RewardSpec, where: str) -> Reward:
    """A fine-grained reward model: dense by nature, its segments are the level it was trained at."""
    from alignkit.rewards.span_model import SpanModelReward

    path = _need(spec, "path", where)
    return SpanModelReward.from_path(path, name=spec.name or Path(path).name, batch_size=spec.batch_size)


def _preference_model(spec: RewardSpec, where: str) -> Reward:
    """A pairwise preference model (``method: preference_model``): a judge of two responses."""
    from alignkit.rewards.preference import PreferenceJudge

    _sequence_only(spec, where)
    path = _need(spec, "path", where)
    return PreferenceJudge.from_path(path, name=spec.name or Path(path).name, batch_size=spec.batch_size,
                                     max_length=spec.max_length)


MIN_SCALES = ("std", "none")


def _min(spec: RewardSpec, where: str) -> Reward:
    """MaxMin-RLHF's egalitarian reward: the minimum over the group reward models of a mixture
    (the ``final/`` folder of method ``maxmin_reward_models``, holding ``group_0``, ``group_1``, ...).
    ``scale: std`` compares the groups in units of each model's std over its training responses (models
    saved without one read as 1), ``none`` as saved."""
    from alignkit.rewards.minimum import OVER, MinReward
    from alignkit.rewards.model import ModelReward

    _sequence_only(spec, where)
    folder = Path(_need(spec, "path", where))
    groups = sorted(folder.glob("group_*"), key=lambda p: int(p.name.rpartition("_")[2]))
    if not groups:
        raise ConfigError(f"{where}.path: {folder} holds no group_0, group_1, ... reward models; give the final/ "
                          "folder of a run of method maxmin_reward_models")
    if spec.over not in OVER:
        raise ConfigError(f"{where}.over: {spec.over!r} is not one of: {', '.join(OVER)}")
    if spec.scale not in MIN_SCALES:
        raise ConfigError(f"{where}.scale: {spec.scale!r} is not one of: {', '.join(MIN_SCALES)}")
    rewards = [ModelReward.from_path(g, name=g.name, batch_size=spec.batch_size, max_length=spec.max_length)
               for g in groups]
    scales = None
    if spec.scale == "std":
        for g, r in zip(groups, rewards):
            if not (r.spread > 0 and math.isfinite(r.spread)):
                raise ConfigError(f"{where}.scale: {g}/alignkit_reward.json has center_std {r.spread!r}, so its "
                                  "rewards cannot be put on a common scale; use scale: none or refit the mixture")
        scales = [r.spread for r in rewards]
    return MinReward(rewards, over=spec.over, name=spec.name or "min", scales=scales)


REWARDS: dict[str, Callable[[RewardSpec, str], Reward]] = {
    "vader": _vader,
    "length": _length,
    "function": _function,
    "model": _model,
    "span_model": _span_model,
    "preference_model": _preference_model,
    "min": _min,
}


def _as_spec(spec: RewardSpec | dict[str, Any], where: str) -> RewardSpec:
    if isinstance(spec, RewardSpec):
        return spec
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'kind', got {type(spec).__name__}")
    allowed = [f.name for f in fields(RewardSpec)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")
    return RewardSpec(**spec)


def _check(spec: RewardSpec, where: str) -> None:
    if not spec.kind:
        raise ConfigError(f"{where}.kind: required; choose one of: {', '.join(sorted(REWARDS))}")
    if spec.kind not in REWARDS:
        raise ConfigError(
            f"{where}.kind: unknown reward {spec.kind!r}; choose one of: {', '.join(sorted(REWARDS))}"
        )
    if spec.granularity not in GRANULARITIES:
        raise ConfigError(
            f"{where}.granularity: {spec.granularity!r} is not one of: {', '.join(GRANULARITIES)}"
        )


def build_reward(spec: RewardSpec | dict[str, Any] | list[RewardSpec | dict[str, Any]]) -> Reward:
    """The :class:`Reward` for one spec, or the weighted mix of a list of specs.

    Every spec's kind is checked before any reward is built (no model loads for a
    config that fails). A reward with ``weight != 1`` alone is a one-reward mix (its
    score is scaled); a list of one spec is that spec. Plain dicts (from YAML) are
    accepted and checked key by key. Errors name the key: ``reward.kind`` for one
    spec, ``rewards[i].kind`` in a list.
    """
    from alignkit.rewards.mix import MixReward

    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError("rewards: the list is empty; give at least one reward")
        where = [f"rewards[{i}]" for i in range(len(spec))]
        specs = [_as_spec(s, w) for s, w in zip(spec, where)]
    else:
        where, specs = ["reward"], [_as_spec(spec, "reward")]
    for s, w in zip(specs, where):
        _check(s, w)
    rewards = [REWARDS[s.kind](s, w) for s, w in zip(specs, where)]
    if len(rewards) == 1 and specs[0].weight == 1.0:
        return rewards[0]
    name = rewards[0].name if len(rewards) == 1 else "mix"
    return MixReward(rewards, [s.weight for s in specs], name=name)
