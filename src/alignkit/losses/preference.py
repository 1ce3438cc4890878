"""Pairwise preference losses. On K > 2 responses each loss is averaged over every
pair (i, j) of a row with i strictly preferred to j; K=2 is the ordinary case.

Shapes: every function takes a :class:`RankedBatch` of ``[B, K]`` tensors and
returns ``(losses [B], metrics)``. Metrics (see :func:`preference_metrics`):
``rewards/accuracy``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margin``,
``logps/chosen``, ``logps/rejected``, where "reward" is the method's implicit
reward of a response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.batch import RankedBatch
from alignkit.losses.common import (
    better_pairs,
    clean,
    has_preference,
    length_normalised,
    log_ratio,
    nll_of_best,
    pair_mean,
    preference_metrics,
)
from alignkit.losses.registry import register_loss


def _diff(x: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` with ``[b, i, j] = x_i - x_j``."""
    return x[:, :, None] - x[:, None, :]


@register_loss("dpo", needs_reference=True)
def dpo(batch: RankedBatch, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290), eq. 7.

    L = -log sigma(h), h = beta * [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)].
    ``label_smoothing`` eps > 0 gives conservative DPO (Mitchell 2023; robust
    labels with flip probability eps): L = -(1-eps) log sigma(h) - eps log sigma(-h).
    Written as softplus(-h) so that ``listwise_dpo`` with K=2 equals it exactly.
    """
    rewards = beta * log_ratio(batch)
    h = _diff(rewards)
    per_pair = (1 - label_smoothing) * F.softplus(-h) + label_smoothing * F.softplus(h)
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("ipo", needs_reference=True)
def ipo(batch: RankedBatch, *, beta: float = 0.1):
    """IPO, Azar et al. 2023 (arXiv 2310.12036), eq. 17.

    L = (h - 1/(2 tau))^2 with h = log pi/pi_ref (y_w) - log pi/pi_ref (y_l) and
    tau = ``beta`` (the regularisation strength, as TRL names it).
    """
    ratios = log_ratio(batch)
    per_pair = (_diff(ratios) - 1 / (2 * beta)) ** 2
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), preference_metrics(batch, beta * ratios)


@register_loss("r_dpo", needs_reference=True)
def r_dpo(batch: RankedBatch, *, beta: float = 0.1, alpha: float = 0.01):
    """R-DPO, Park et al. 2024 "Disentangling Length from Quality" (arXiv 2403.19159), eq. 9.

    L = -log sigma(beta * [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)] - alpha (|y_w| - |y_l|)):
    DPO whose margin is penalised by the length difference in tokens.
    """
    rewards = beta * log_ratio(batch)
    lengths = clean(batch.lengths, batch.mask)
    h = _diff(rewards) - alpha * _diff(lengths)
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("simpo", needs_reference=False)
def simpo(batch: RankedBatch, *, beta: float = 2.0, gamma: float = 1.0):
    """SimPO, Meng et al. 2024 (arXiv 2405.14734), eq. 6.

    L = -log sigma(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma): reference-free,
    length-normalised, with target reward margin gamma (paper: beta=2.0, gamma/beta=0.5).
    """
    rewards = beta * length_normalised(batch)
    h = _diff(rewards) - gamma
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("cpo", needs_reference=False)
def cpo(batch: RankedBatch, *, beta: float = 0.1, nll_weight: float = 1.0):
    """CPO, Xu et al. 2024 (arXiv 2401.08417), eq. 7.

    L = -log sigma(beta log pi(y_w) - beta log pi(y_l)) + nll_weight * NLL(y_w),
    the NLL of the best response taken per token (token mean).
    """
    rewards = beta * clean(batch.policy_logps, batch.mask)
    prefs = pair_mean(F.softplus(-_diff(rewards)), better_pairs(batch.scores, batch.mask))
    return prefs + nll_weight * nll_of_best(batch), preference_metrics(batch, rewards)


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from log p <= 0, with log(1 - p) = log(-expm1(log p)) (safe near p=1)."""
    logp = mean_logp.clamp(max=-1e-6)
    return logp - torch.log(-torch.expm1(logp))


@register_loss("orpo", needs_reference=False)
def orpo(batch: RankedBatch, *, lam: float = 0.1):
    """ORPO, Hong et al. 2024 (arXiv 2403.07691), eq. 6-7.

    L = NLL(y_w) + lam * -log sigma(log odds(y_w) - log odds(y_l)), where
    odds(y) = P(y)/(1 - P(y)) with P(y) = exp(mean token log-prob), and NLL the token mean.
    """
    odds = _log_odds(length_normalised(batch))
    per_pair = F.softplus(-_diff(odds))
    loss = nll_of_best(batch) + lam * pair_mean(per_pair, better_pairs(batch.scores, batch.mask))
    return loss, preference_metrics(batch, odds)


@register_loss("slic_hf", needs_reference=False)
def slic_hf(batch: RankedBatch, *, delta: float = 1.0, lam: float = 0.1):
    """SLiC-HF, Zhao et al. 2023 (arXiv 2305.10425), eq. 3 (rank calibration + regularisation).

    L = max(0, delta - log pi(y_w) + log pi(y_l)) + lam * NLL(y_ref), with the
    regularisation target y_ref the best response of the row (token-mean NLL).
    """
    logps = clean(batch.policy_logps, batch.mask)
    hinge = F.relu(delta - _diff(logps))
    loss = pair_mean(hinge, better_pairs(batch.scores, batch.mask)) + lam * nll_of_best(batch)
    return loss, preference_metrics(batch, logps)


@register_loss("kto", needs_reference=True)
def kto(batch: RankedBatch, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO, Ethayarajh et al. 2024 (arXiv 2402.01306), eq. 8.

    With r = log pi/pi_ref (y) and the reference point z0 = max(0, mean r) over the
    batch's responses (detached; the paper's batch estimate of KL(pi || pi_ref)):
    desirable y: lambda_D (1 - sigma(beta (r - z0))); undesirable: lambda_U (1 - sigma(beta (z0 - r))).
    The loss of a prompt is the sum over its responses. ``batch.desirable`` labels
    unpaired data; without it the top-scored response of a row with a preference is
    desirable and the others undesirable, and rows without a preference give 0.
    Extra metrics: ``kl`` (z0).
    """
    ratios = log_ratio(batch)
    n = batch.mask.sum().clamp(min=1)
    z0 = (ratios.sum() / n).clamp(min=0).detach()
    if batch.desirable is not None:
        desirable, valid = batch.desirable & batch.mask, batch.mask
    else:
        top = batch.scores.float().masked_fill(~batch.mask, float("-inf")).amax(dim=1, keepdim=True)
        desirable = batch.mask & (batch.scores.float() == top)
        valid = batch.mask & has_preference(batch)[:, None]
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratios - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratios)))
    per_response = torch.where(desirable, good, bad)
    losses = torch.where(valid, per_response, torch.zeros_like(per_response)).sum(dim=1)
    metrics = preference_metrics(batch, beta * ratios)
    metrics["kl"] = z0
    return losses, metrics
