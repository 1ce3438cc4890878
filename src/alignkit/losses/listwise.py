"""Ranking losses over all K responses of a prompt.

Shapes: ``RankedBatch`` of ``[B, K]`` in, ``(losses [B], metrics)`` out. Ties never
count as preferences: a response only competes against responses scored strictly
lower, and rows without a strict preference give exactly 0. Metrics as in
:mod:`alignkit.losses.preference` (``rewards/accuracy``, ``rewards/chosen``,
``rewards/rejected``, ``rewards/margin``, ``logps/chosen``, ``logps/rejected``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.batch import RankedBatch
from alignkit.losses.common import (
    better_pairs,
    length_normalised,
    log_ratio,
    nll_of_best,
    pairwise_diff,
    preference_metrics,
)
from alignkit.losses.registry import register_loss


def plackett_luce_nll(rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log of the Plackett-Luce likelihood of each row's ranking, ``[B]``.

    For the ranking y_1 > ... > y_K the likelihood is prod_k exp(r_k) / sum_{i >= k} exp(r_i).
    With ties, the denominator of a response k holds k itself and every valid response
    scored strictly lower (never one tied with it), so each valid response contributes
    -log( exp(r_k) / (exp(r_k) + sum_{j below k} exp(r_j)) ) = softplus(logsumexp_{j below k} r_j - r_k),
    and a response with nothing below it contributes 0. With one response below, the
    term is softplus(r_j - r_k) = -log sigma(r_k - r_j): the pairwise (DPO) form, exactly.
    """
    below = better_pairs(scores, mask)  # [B, k, j]: j ranked strictly below k
    has_below = below.any(dim=2)  # [B, K]
    neg_inf = torch.tensor(float("-inf"), device=rewards.device)
    competitors = torch.where(below, rewards[:, None, :], neg_inf)  # [B, K, K]
    # A position with no competitor gets zeros so that logsumexp (and its gradient) stays finite.
    competitors = torch.where(has_below[:, :, None], competitors, torch.zeros_like(competitors))
    terms = F.softplus(torch.logsumexp(competitors, dim=2) - rewards)  # [B, K]
    return torch.where(has_below, terms, torch.zeros_like(terms)).sum(dim=1)


@register_loss("listwise_dpo", needs_reference=True, data="ranked")
def listwise_dpo(batch: RankedBatch, *, beta: float = 0.1):
    """Listwise DPO: DPO's implicit reward inside the Plackett-Luce likelihood of the ranking.

    Rafailov et al. 2023, arXiv 2305.18290, appendix A.3 (the Plackett-Luce objective):
    r_k = beta log pi/pi_ref (y_k); L = -sum_k log( exp(r_k) / sum_{i >= k} exp(r_i) ) over
    y_1 > ... > y_K, each position against the responses ranked strictly below it (ties
    as in :func:`plackett_luce_nll`). With K=2 this equals ``dpo`` exactly.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = beta * log-ratio.
    """
    rewards = beta * log_ratio(batch)  # [B, K]
    return plackett_luce_nll(rewards, batch.scores, batch.mask), preference_metrics(batch, rewards)


@register_loss("pro", needs_reference=False, data="ranked")
def pro(batch: RankedBatch, *, beta: float = 0.05, temperature: float = 1.0):
    """PRO, Song et al. 2024 "Preference Ranking Optimization", arXiv 2306.17492, eq. 8-9.

    Plackett-Luce over the ranking with the policy's length-normalised scores
    s_k = log pi(y_k) / |y_k| / temperature, plus beta times the token-mean NLL of the top
    response: L = -sum_{k<K} log( exp(s_k) / sum_{i >= k} exp(s_i) ) + beta NLL(y_1).
    Ties: the denominator of y_k holds y_k and the responses scored strictly lower
    (:func:`plackett_luce_nll`); tied top responses each get a term, NLL(y_1) takes the
    first of them. beta = 0.05 is the authors' ``--sft_weight``; their code further
    multiplies it by (K-1)^2 and applies it to the summed NLL, and sets per-pair
    temperatures from reward-score gaps; neither is applied here.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = log pi(y)/|y|.
    """
    mean_logps = length_normalised(batch)  # [B, K]
    loss = plackett_luce_nll(mean_logps / temperature, batch.scores, batch.mask) + beta * nll_of_best(batch)
    return loss, preference_metrics(batch, mean_logps)


@register_loss("rrhf", needs_reference=False, data="ranked")
def rrhf(batch: RankedBatch, *, lam: float = 1.0):
    """RRHF, Yuan et al. 2023, arXiv 2304.05302, eq. 2-4.

    p_i = log pi(y_i) / |y_i|; L_rank = sum over ALL pairs with r_i < r_j of max(0, p_i - p_j)
    (a sum, as in eq. 2, not a mean); L = L_rank + lam * L_ft, with L_ft the token-mean
    cross-entropy of the top-scored response (eq. 3; the first on ties). The authors'
    code indexed its pairwise matrix with ``[0]`` and so compared only the first response
    with the others, an acknowledged bug; here every pair of the K responses counts.

    Shapes: ``[B, K]`` in, ``[B]`` out. Metrics: see the module; reward = p = log pi(y)/|y|.
    """
    p = length_normalised(batch)  # [B, K]
    pairs = better_pairs(batch.scores, batch.mask)  # [b, i, j]: i better than j
    violation = F.relu(-pairwise_diff(p))  # [b, i, j] = max(0, p_j - p_i)
    rank = torch.where(pairs, violation, torch.zeros_like(violation)).sum(dim=(1, 2))
    return rank + lam * nll_of_best(batch), preference_metrics(batch, p)
