"""Pairwise preference losses, one registered function per method.

On K > 2 responses a pairwise loss is applied to every pair (i, j) of a row with i
scored strictly higher than j, and averaged over the row's pairs, so the same
function trains on ranked data; K=2 is the ordinary chosen/rejected case. Rows
without a strict preference (all tied, one response, all masked) give exactly 0.

Shapes: every function takes a :class:`RankedBatch` of ``[B, K]`` tensors and returns
``(losses [B], metrics)``. Metrics (:func:`preference_metrics`): ``rewards/accuracy``,
``rewards/chosen``, ``rewards/rejected``, ``rewards/margin``, ``logps/chosen``,
``logps/rejected``, where the "reward" of a response is beta * log pi/pi_ref for the
reference-based methods and the policy's log-prob (per token where the method
normalises by length) for the reference-free ones.
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
    log1mexp,
    log_ratio,
    nll_of_best,
    pair_mean,
    pairwise_diff,
    preference_metrics,
)
from alignkit.losses.registry import register_loss


@register_loss("dpo", needs_reference=True)
def dpo(batch: RankedBatch, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """DPO, Rafailov et al. 2023, arXiv 2305.18290, eq. 7.

    L = -log sigma(h), h = beta * [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)].
    ``label_smoothing`` eps > 0 gives conservative DPO (cDPO, Mitchell 2023: labels
    flipped with probability eps): L = -(1-eps) log sigma(h) - eps log sigma(-h).
    Written as softplus(-h) so that ``listwise_dpo`` with K=2 equals it exactly.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = beta * log-ratio.
    """
    rewards = beta * log_ratio(batch)  # [B, K]
    h = pairwise_diff(rewards)  # [B, K, K]
    per_pair = (1 - label_smoothing) * F.softplus(-h) + label_smoothing * F.softplus(h)
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("ipo", needs_reference=True)
def ipo(batch: RankedBatch, *, beta: float = 0.1):
    """IPO, Azar et al. 2023, arXiv 2310.12036, eq. 17.

    L = (h - 1/(2 tau))^2 with h = log pi/pi_ref (y_w) - log pi/pi_ref (y_l) (summed
    log-probs) and tau = ``beta``, the regularisation strength, as TRL names it.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = beta * log-ratio.
    """
    ratios = log_ratio(batch)  # [B, K]
    per_pair = (pairwise_diff(ratios) - 1 / (2 * beta)) ** 2
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), preference_metrics(batch, beta * ratios)


@register_loss("r_dpo", needs_reference=True)
def r_dpo(batch: RankedBatch, *, beta: float = 0.1, alpha: float = 0.01):
    """R-DPO, Park et al. 2024 "Disentangling Length from Quality in DPO", arXiv 2403.19159, eq. 9.

    L = -log sigma(beta h + alpha (|y_w| - |y_l|)), h the DPO log-ratio margin and |y|
    the response length in tokens. The length term comes from the length-penalised
    RLHF objective max E[r(x, y)] - alpha |y| - beta KL: the data's preference for a longer
    y_w is partly explained by length, so such pairs push the policy less (a plus sign,
    as in the paper and in SimPO's Table 3; a minus sign would reward verbosity).

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = beta * log-ratio.
    """
    rewards = beta * log_ratio(batch)  # [B, K]
    lengths = clean(batch.lengths, batch.mask)
    h = pairwise_diff(rewards) + alpha * pairwise_diff(lengths)  # [B, K, K]
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("simpo", needs_reference=False)
def simpo(batch: RankedBatch, *, beta: float = 2.0, gamma: float = 0.5):
    """SimPO, Meng et al. 2024, arXiv 2405.14734, eq. 6.

    L = -log sigma(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma): reference-free,
    length-normalised, with target reward margin gamma. Defaults are the authors'
    trainer defaults (beta=2.0, gamma_beta_ratio=0.25, so gamma = 0.5).

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = log pi(y)/|y|.
    """
    mean_logps = length_normalised(batch)  # [B, K]
    h = beta * pairwise_diff(mean_logps) - gamma
    return pair_mean(F.softplus(-h), better_pairs(batch.scores, batch.mask)), preference_metrics(batch, mean_logps)


@register_loss("cpo", needs_reference=False)
def cpo(batch: RankedBatch, *, beta: float = 0.1, nll_weight: float = 1.0):
    """CPO, Xu et al. 2024, arXiv 2401.08417, eq. 7 (L_prefer + L_NLL).

    L = -log sigma(beta log pi(y_w) - beta log pi(y_l)) + nll_weight * NLL(y_best), the
    NLL taken per token (token mean) on the row's top-scored response.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = log pi(y).
    """
    logps = clean(batch.policy_logps, batch.mask)  # [B, K]
    prefs = pair_mean(F.softplus(-beta * pairwise_diff(logps)), better_pairs(batch.scores, batch.mask))
    return prefs + nll_weight * nll_of_best(batch), preference_metrics(batch, logps)


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P / (1 - P)) from log P <= 0; P is capped at exp(-1e-6) (odds ~1e6) as log1mexp does."""
    logp = mean_logp.clamp(max=-1e-6)
    return logp - log1mexp(logp)


@register_loss("orpo", needs_reference=False)
def orpo(batch: RankedBatch, *, lam: float = 0.1):
    """ORPO, Hong et al. 2024, arXiv 2403.07691, eq. 6-7.

    L = NLL(y_w) + lam * -log sigma(log odds(y_w) - log odds(y_l)), where
    odds(y) = P(y) / (1 - P(y)) with log P(y) the mean token log-prob, log(1 - P) taken
    by a safe log1mexp, and NLL the token mean on the row's top-scored response.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = log pi(y)/|y|.
    """
    mean_logps = length_normalised(batch)  # [B, K]
    per_pair = F.softplus(-pairwise_diff(_log_odds(mean_logps)))
    loss = nll_of_best(batch) + lam * pair_mean(per_pair, better_pairs(batch.scores, batch.mask))
    return loss, preference_metrics(batch, mean_logps)


@register_loss("slic_hf", needs_reference=False)
def slic_hf(batch: RankedBatch, *, delta: float = 1.0, lam: float = 0.1):
    """SLiC-HF, Zhao et al. 2023, arXiv 2305.10425, eq. 4 (rank calibration + cross-entropy).

    L = max(0, delta - log pi(y_w) + log pi(y_l)) + lam * NLL(y_ref), with the
    regularisation target y_ref the row's top-scored response (the paper uses the SFT
    target) and its NLL taken per token. delta = 1.0 is the paper's margin; lam = 0.1 is a
    conventional weight (unverified against the paper).

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = log pi(y).
    """
    logps = clean(batch.policy_logps, batch.mask)  # [B, K]
    hinge = F.relu(delta - pairwise_diff(logps))
    loss = pair_mean(hinge, better_pairs(batch.scores, batch.mask)) + lam * nll_of_best(batch)
    return loss, preference_metrics(batch, logps)


@register_loss("hinge", needs_reference=True)
def hinge(batch: RankedBatch, *, beta: float = 0.1):
    """Hinge on the log-ratio margin: SLiC-HF's rank calibration hinge (Zhao et al. 2023, arXiv 2305.10425,
    eq. 4) on ``log pi / pi_ref`` instead of ``log pi``, RSO's "hinge-norm" loss (Liu et al. 2023, arXiv
    2309.06657, sec. 3); TRL's ``loss_type="hinge"``.

    L = max(0, 1 - beta * h), h = log pi/pi_ref (y_w) - log pi/pi_ref (y_l): no gradient once the scaled
    margin passes 1 (DPO's logistic loss never stops pushing). beta = 0.1 follows TRL (unverified against
    the paper).

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = beta * log-ratio.
    """
    rewards = beta * log_ratio(batch)  # [B, K]
    per_pair = F.relu(1 - pairwise_diff(rewards))  # [B, K, K]
    return pair_mean(per_pair, better_pairs(batch.scores, batch.mask)), preference_metrics(batch, rewards)


@register_loss("kto", needs_reference=True, data="unpaired")
def kto(batch: RankedBatch, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """KTO, Ethayarajh et al. 2024, arXiv 2402.01306, eq. 8.

    With r = log pi/pi_ref (y) and the reference point z0 = max(0, mean r) over all valid
    responses of the batch (detached; the batch estimate of KL(pi || pi_ref) of the
    paper's Sec. 4.1), desirable y costs lambda_D (1 - sigma(beta (r - z0))) and
    undesirable y lambda_U (1 - sigma(beta (z0 - r))). The loss of a prompt is the sum
    over its responses (a K=1 unpaired row is then exactly the paper's per-example loss).

    ``batch.desirable`` labels unpaired data; when it is None the top-scored responses of
    a row are desirable and the others undesirable, and rows without a strict preference
    give 0. Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module with reward =
    beta * r, plus ``kl`` (z0); with ``batch.desirable`` the chosen/rejected metrics are
    means over the batch's desirable/undesirable responses instead.
    """
    ratios = log_ratio(batch)  # [B, K]
    z0 = (ratios.sum() / batch.mask.sum().clamp(min=1)).clamp(min=0).detach()
    if batch.desirable is not None:
        desirable, valid = batch.desirable & batch.mask, batch.mask
    else:
        top = batch.scores.float().masked_fill(~batch.mask, float("-inf")).amax(dim=1, keepdim=True)
        desirable = batch.mask & (batch.scores.float() == top)
        valid = batch.mask & has_preference(batch)[:, None]
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratios - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratios)))
    per_response = torch.where(desirable, good, bad)  # [B, K]
    losses = torch.where(valid, per_response, torch.zeros_like(per_response)).sum(dim=1)
    metrics = preference_metrics(batch, beta * ratios)
    if batch.desirable is not None:
        metrics.update(_unpaired_metrics(batch, beta * ratios.detach(), desirable))
    metrics["kl"] = z0
    return losses, metrics


def _unpaired_metrics(batch: RankedBatch, rewards: torch.Tensor, desirable: torch.Tensor) -> dict:
    """Chosen/rejected summaries as means over desirable/undesirable responses (KTO's data)."""
    undesirable = batch.mask & ~desirable
    logps = clean(batch.policy_logps.detach(), batch.mask)

    def mean(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return torch.where(where, x, torch.zeros_like(x)).sum() / where.sum().clamp(min=1)

    chosen, rejected = mean(rewards, desirable), mean(rewards, undesirable)
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margin": chosen - rejected,
        "logps/chosen": mean(logps, desirable),
        "logps/rejected": mean(logps, undesirable),
    }
