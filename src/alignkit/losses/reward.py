"""Reward-model losses.

These reuse :class:`RankedBatch` with ``policy_logps`` holding the reward model's
scalar outputs r ``[B, K]`` (no log-probs are involved; ``ref_logps`` is None and
``lengths`` is ignored). ``scores`` and ``mask`` mean what they always do.

Shapes: ``[B, K]`` in, ``(losses [B], metrics)`` out. Metrics (:func:`reward_model_metrics`,
TRL's RewardTrainer names): ``accuracy`` (r of the better response strictly above the worse,
over the batch's pairs), ``margin`` (r of each row's best response minus its worst's) and
``mean_reward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.batch import RankedBatch
from alignkit.losses.common import better_pairs, clean, pair_mean, pairwise_diff, reward_model_metrics
from alignkit.losses.registry import register_loss


@register_loss("bradley_terry", needs_reference=False, trains="reward_model")
def bradley_terry(batch: RankedBatch, *, margin: float = 0.0):
    """Pairwise Bradley-Terry loss: Stiennon et al. 2020, arXiv 2009.01325, eq. 1;
    the margin variant of Llama 2, Touvron et al. 2023, arXiv 2307.09288, eq. 2.

    L = -log sigma(r_w - r_l - margin). K=2 is the ordinary case; on K > 2 the loss is
    averaged over the row's strict pairs (ties and padding skipped).
    """
    r = clean(batch.policy_logps, batch.mask)  # [B, K]
    h = pairwise_diff(r) - margin  # [B, K, K]
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), reward_model_metrics(batch, r)


@register_loss("kwise", needs_reference=False, data="ranked", trains="reward_model")
def kwise(batch: RankedBatch):
    """InstructGPT's K-wise loss, Ouyang et al. 2022, arXiv 2203.02155, eq. 1.

    L = -1/C(K,2) sum_{(y_w, y_l)} log sigma(r(y_w) - r(y_l)) over all pairs of the K
    ranked responses of a prompt, kept together as one batch element (so a prompt weighs
    the same whatever its K). Tied pairs are skipped and the mean is taken over the
    row's non-tied valid pairs, which is 1/C(K,2) when nothing is tied. This is
    ``bradley_terry`` with margin 0; the name keeps InstructGPT-style configs readable.
    """
    r = clean(batch.policy_logps, batch.mask)  # [B, K]
    per_pair = F.softplus(-pairwise_diff(r))  # [B, K, K]
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), reward_model_metrics(batch, r)


def segment_error_loss(logits, labels, error_weight: float = 1.0):
    """Per-segment cross-entropy of a fine-grained reward model (Wu et al. 2023, sec. 4.1).

    ``logits`` ``[M, 2]`` at the M segment-end tokens (class 1: the segment has an error),
    ``labels`` ``[M]`` in {0, 1}. Returns ``[M]``: ``w_label (logsumexp(z) - z_label)``, the
    token-classification loss read only at segment ends, with ``w_1 = error_weight`` and
    ``w_0 = 1`` (a class weight: above 1 it counts a missed error more than a false alarm).
    Not a ``[B, K]`` preference loss, so it is not in the ``LOSSES`` registry.
    """
    labels = labels.long()
    weights = torch.where(labels == 1, error_weight, 1.0).to(logits.device)
    return F.cross_entropy(logits.float(), labels, reduction="none") * weights


def preference_model_loss(logits, weights):
    """Logistic loss of a pairwise preference model (:mod:`alignkit.models.preference_model`).

    ``logits`` ``[M]``: g(x, y_w, y_l), the model's log-odds that the better response of each
    of the M ordered pairs beats the worse; ``weights`` ``[M]``: 1 / (the pair's row's number of
    pairs), so that every row weighs the same whatever its K (as :func:`kwise`). Returns ``[M]``:
    ``weight * -log sigma(g) = weight * softplus(-g)``; summed per row it is the row's mean pair loss.
    Not a ``[B, K]`` loss over per-response scores, so it is not in the ``LOSSES`` registry.
    """
    return weights * F.softplus(-logits.float())
