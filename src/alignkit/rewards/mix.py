"""A weighted sum of rewards: ``score = sum_i w_i * r_i``.

:meth:`MixReward.breakdown` gives each component's raw (unweighted) score for
metrics; :meth:`MixReward.combine` turns a breakdown into the mixed score, so a
caller that logs both scores every component once. Dense segments of a mix are the
union of every component's weighted segments, sorted by end (segments of different
components ending at the same character stay separate entries; PPO adds them up).
"""

from __future__ import annotations

import torch

from alignkit.errors import ConfigError
from alignkit.rewards.base import Reward, Segment


class MixReward(Reward):
    """``sum_i weights[i] * rewards[i]``; component names must be distinct (they key the breakdown)."""

    def __init__(self, rewards: list[Reward], weights: list[float] | None = None, name: str = "mix"):
        weights = [1.0] * len(rewards) if weights is None else [float(w) for w in weights]
        if not rewards or len(weights) != len(rewards):
            raise ValueError(
                f"a mix needs one weight per reward, got {len(rewards)} rewards, {len(weights)} weights"
            )
        names = [r.name for r in rewards]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(
                f"rewards: the name {duplicated[0]!r} is used twice; give each reward a distinct name"
            )
        self.rewards = rewards
        self.weights = weights
        self.name = name
        self.dense = any(r.dense for r in rewards)

    def breakdown(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """Each component's raw score ``[N]``, keyed by its name."""
        return {r.name: r.score(prompts, responses) for r in self.rewards}

    def combine(self, breakdown: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mixed score ``[N]`` from a :meth:`breakdown`."""
        return sum(w * breakdown[r.name] for r, w in zip(self.rewards, self.weights))

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.combine(self.breakdown(prompts, responses))

    def score_segments(self, prompts: list[str], responses: list[str]) -> list[list[Segment]]:
        merged: list[list[Segment]] = [[] for _ in responses]
        for reward, weight in zip(self.rewards, self.weights):
            for out, segments in zip(merged, reward.score_segments(prompts, responses)):
                out.extend((end, weight * value) for end, value in segments)
        return [sorted(segs, key=lambda s: s[0]) for segs in merged]  # stable: ties keep component order
