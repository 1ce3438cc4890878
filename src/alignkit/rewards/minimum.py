"""The egalitarian reward of MaxMin-RLHF (Chakraborty et al. 2024, arXiv 2402.08925): the minimum over
groups' rewards, so that RL maximises ``min_h E_{x, y ~ pi}[r_h(x, y)]`` (the paper's eq. 6).

Two ways to take the minimum of a batch's rewards ``r_h(x_i, y_i)`` ``[H, N]``:

- ``over="batch"`` (the default, the paper's Algorithm 2): the group whose mean reward over the batch
  is lowest, ``h* = argmin_h mean_i r_h(x_i, y_i)``, and every sample gets ``r_{h*}``. Its expected
  gradient is that of ``min_h E[r_h]`` (a subgradient at the active group), the objective itself;
- ``over="sample"``: ``min_h r_h(x_i, y_i)`` per sample, which maximises ``E[min_h r_h]`` instead, a
  lower bound that can favour responses no group likes much over ones one group loves.

The batch is the rollout the RL trainer scores at once (``train.batch_size x sampling.num_samples``).

Which group is worst off is a comparison across reward models, so their units must agree. A Bradley-Terry
reward is fixed only up to an offset (removed by centring each on the training responses) and, through
the data, a scale: a group whose labels follow a deterministic rule is fitted with large margins and its
rewards spread widely, whatever that group's stake. ``scales`` (``s_h > 0``, one per group) divide each
group's rewards before the minimum, ``r_h / s_h``: with each model's std over the training responses
(``kind: min``'s ``scale: std``, the default) every group is measured in "standard deviations above an
average starting response". Without (``scale: none``) the raw centred rewards are compared, as the paper
writes the objective.

Each group's (scaled) rewards are :meth:`MinReward.score_with_details` diagnostics, so the RL trainer
logs them per step (``reward/<group>``) and ``alignkit eval`` reports them (``<reward>/<group>``).
"""

from __future__ import annotations

import math

import torch

from alignkit.rewards.base import Reward, check_batch

OVER = ("batch", "sample")


class MinReward(Reward):
    """The minimum of ``rewards`` (one per group), each divided by its ``scales`` entry (all 1 when None),
    over the batch or per sample (see the module doc)."""

    def __init__(self, rewards: list[Reward], over: str = "batch", name: str = "min",
                 scales: list[float] | None = None):
        if not rewards:
            raise ValueError("MinReward needs at least one reward")
        if over not in OVER:
            raise ValueError(f"over={over!r}: choose one of {', '.join(OVER)}")
        names = [r.name for r in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"the group rewards need distinct names, got {names}")
        scales = [1.0] * len(rewards) if scales is None else [float(s) for s in scales]
        if len(scales) != len(rewards) or not all(s > 0 and math.isfinite(s) for s in scales):
            raise ValueError(f"scales must be {len(rewards)} positive finite numbers, one per group; got {scales}")
        self.rewards, self.over, self.name = rewards, over, name
        self.scales = torch.tensor(scales, dtype=torch.float32)  # [H]

    def group_scores(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Every group's reward of every response divided by that group's scale, ``r_h / s_h``: ``[H, N]``."""
        check_batch(prompts, responses)
        return torch.stack([r.score(prompts, responses).float() for r in self.rewards]) / self.scales[:, None]

    def combine(self, per_group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The minimum ``[N]`` of ``[H, N]`` group rewards, and the group it came from ``[N]``."""
        if self.over == "sample":
            values, groups = per_group.min(dim=0)
            return values, groups
        worst = int(per_group.mean(dim=1).argmin())  # h* = argmin_h mean_i r_h(x_i, y_i)
        return per_group[worst], torch.full((per_group.shape[1],), worst, dtype=torch.long)

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.combine(self.group_scores(prompts, responses))[0]

    def score_with_details(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The minimum, with each group's reward and the group that was the minimum (``min_group``)."""
        per_group = self.group_scores(prompts, responses)
        values, groups = self.combine(per_group)
        details = {r.name: s for r, s in zip(self.rewards, per_group)}
        return values, {**details, "min_group": groups.float()}
