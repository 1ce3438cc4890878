"""Ranking losses over all K responses of a prompt.

Shapes: ``RankedBatch`` of ``[B, K]`` in, ``(losses [B], metrics)`` out. Ties never
count as preferences: a response only competes against responses scored strictly
lower. Metrics as in :mod:`alignkit.losses.preference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.batch import RankedBatch
from alignkit.losses.common import better_pairs, length_normalised, log_ratio, nll_of_best, preference_metrics
from alignkit.losses.registry import register_loss


def plackett_luce_nll(rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log of the Plackett-Luce likelihood of the ranking, ``[B]``.

    Each valid response i contributes -log( exp(r_i) / (exp(r_i) + sum_{j ranked strictly
    below i} exp(r_j)) ) = softplus(logsumexp_{j below i} r_j - r_i); a response with
    nothing below it contributes 0. With one response below, the term is softplus(r_j - r_i)
    = -log sigma(r_i - r_j): the pairwise (DPO) form, exactly.
    """
    below = better_pairs(scores, mask)  # [B, i, j]: j ranked strictly below i
    has_below = below.any(dim=2)  # [B, K]
    neg_inf = torch.tensor(float("-inf"), device=rewards.device)
    competitors = torch.where(below, rewards[:, None, :], neg_inf)  # [B, K, K]
    # Rows with no competitor get zeros so that logsumexp (and its gradient) stays finite.
    competitors = torch.where(has_below[:, :, None], competitors, torch.zeros_like(competitors))
    terms = F.softplus(torch.logsumexp(competitors, dim=2) - rewards)
    return torch.where(has_below, terms, torch.zeros_like(terms)).sum(dim=1)


@register_loss("listwise_dpo", needs_reference=True)
def listwise_dpo(batch: RankedBatch, *, beta: float = 0.1):
    """Listwise DPO: DPO's implicit reward in the Plackett-Luce likelihood of the ranking.

    r_k = beta log pi/pi_ref (y_k); L = -sum_k log( exp(r_k) / sum_{i >= k} exp(r_i) )
    over the ranking y_1 > ... > y_K (Rafailov et al. 2023, appendix A.3, eq. 20-21).
    With K=2 this equals ``dpo`` exactly.
    """
    rewards = beta * log_ratio(batch)
    return plackett_luce_nll(rewards, batch.scores, batch.mask), preference_metrics(batch, rewards)


@register_loss("pro", needs_reference=False)
def pro(batch: RankedBatch, *, beta: float = 0.05, temperature: float = 1.0):
    """PRO, Song et al. 2024 "Preference Ranking Optimization" (arXiv 2306.17492), eq. 8-9.

    Plackett-Luce over the ranking with the policy's length-normalised scores
    s_k = log pi(y_k) / |y_k| / temperature, plus beta times the token-mean NLL of the
    top response: L = -sum_k log( exp(s_k) / sum_{i >= k} exp(s_i) ) + beta NLL(y_1).
    (The paper's dynamic temperature from reward gaps is not applied.)
    """
    scores = length_normalised(batch) / temperature
    loss = plackett_luce_nll(scores, batch.scores, batch.mask) + beta * nll_of_best(batch)
    return loss, preference_metrics(batch, scores)


@register_loss("rrhf", needs_reference=False)
def rrhf(batch: RankedBatch, *, lam: float = 1.0):
    """RRHF, Yuan et al. 2023 (arXiv 2304.05302), eq. 2-4.

    p_i = log pi(y_i) / |y_i|; L_rank = sum over ALL pairs with r_i < r_j of max(0, p_i - p_j);
    L = L_rank + lam * L_ft, with L_ft the token-mean cross-entropy of the best response.
    The authors' code used only the first row of its pairwise matrix (a bug reported in
    their issue tracker); here every pair of the K responses counts.
    """
    p = length_normalised(batch)
    pairs = better_pairs(batch.scores, batch.mask)  # [b, i, j]: i better than j
    violation = F.relu(p[:, None, :] - p[:, :, None])  # p_j - p_i for worse j, better i
    rank = torch.where(pairs, violation, torch.zeros_like(violation)).sum(dim=(1, 2))
    return rank + lam * nll_of_best(batch), preference_metrics(batch, p)
