"""Reward-model losses. ``RankedBatch.policy_logps`` holds the reward model's scalar
outputs r ``[B, K]`` here (the same container; no log-probs are involved).
Metrics: ``rewards/accuracy`` (r of the better response above the worse) and the
chosen/rejected summaries of :func:`preference_metrics`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.batch import RankedBatch
from alignkit.losses.common import better_pairs, clean, pair_mean, preference_metrics
from alignkit.losses.registry import register_loss


@register_loss("bradley_terry", needs_reference=False)
def bradley_terry(batch: RankedBatch, *, margin: float = 0.0):
    """Pairwise Bradley-Terry loss (Stiennon et al. 2020; Llama 2's margin variant, eq. 2).

    L = -log sigma(r_w - r_l - margin), averaged over the strict pairs of a row.
    """
    r = clean(batch.policy_logps, batch.mask)
    h = r[:, :, None] - r[:, None, :] - margin
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), preference_metrics(batch, r)


@register_loss("kwise", needs_reference=False)
def kwise(batch: RankedBatch):
    """InstructGPT's K-wise loss, Ouyang et al. 2022 (arXiv 2203.02155), eq. 1.

    L = -1/C(K,2) sum_{(y_w, y_l)} log sigma(r(y_w) - r(y_l)) over all pairs of the K
    ranked responses of a prompt, in one batch element. Tied pairs are skipped but
    keep their share of the 1/C(K,2) weight (K counts the valid responses).
    """
    r = clean(batch.policy_logps, batch.mask)
    pairs = better_pairs(batch.scores, batch.mask)
    per_pair = torch.where(pairs, F.softplus(-(r[:, :, None] - r[:, None, :])), torch.zeros_like(r[:, :, None]))
    k = batch.mask.sum(dim=1).float()
    n_pairs = (k * (k - 1) / 2).clamp(min=1)
    return per_pair.sum(dim=(1, 2)) / n_pairs, preference_metrics(batch, r)
