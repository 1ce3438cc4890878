"""Helpers shared by the loss families: pair masks, safe masking, per-row averaging, metrics.

Masked entries of a :class:`RankedBatch` may hold anything (0, garbage, NaN, inf); every
loss first replaces them with 0 through ``torch.where``, whose backward sends them
exactly zero gradient, so nothing non-finite can reach a loss or a gradient. Everything
is computed in float32 whatever the input dtype.

Conventions: ``[b, i, j]`` indexes prompt b and an ordered pair of its responses;
a pair counts only when i scores strictly higher than j and both are valid (ties and
padding are never preferences).
"""

from __future__ import annotations

import torch

from alignkit.losses.batch import RankedBatch


def clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 with masked entries set to 0 (and zero gradient)."""
    return torch.where(mask, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))


def pairwise_diff(x: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` with ``[b, i, j] = x[b, i] - x[b, j]``."""
    return x[:, :, None] - x[:, None, :]


def better_pairs(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` bool: ``better[b, i, j] = mask_i & mask_j & (scores_i > scores_j)``."""
    valid = mask[:, :, None] & mask[:, None, :]
    return valid & (scores[:, :, None] > scores[:, None, :])


def pair_mean(values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, K, K]`` over each row's pairs; 0 for a row without pairs. Returns ``[B]``."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(pairs, values, zero).sum(dim=(1, 2))
    count = pairs.sum(dim=(1, 2))
    return total / count.clamp(min=1)


def best_index(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the top-scored valid response (the first on ties)."""
    return scores.float().masked_fill(~mask, float("-inf")).argmax(dim=1)


def worst_index(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the lowest-scored valid response (the first on ties)."""
    return scores.float().masked_fill(~mask, float("inf")).argmin(dim=1)


def has_preference(batch: RankedBatch) -> torch.Tensor:
    """``[B]`` bool: the row has at least one strict preference among valid responses."""
    return better_pairs(batch.scores, batch.mask).flatten(1).any(dim=1)


def log_ratio(batch: RankedBatch) -> torch.Tensor:
    """``[B, K]`` log pi - log pi_ref, 0 where masked."""
    if batch.ref_logps is None:
        raise ValueError("this loss needs RankedBatch.ref_logps (a reference model); got None")
    return clean(batch.policy_logps, batch.mask) - clean(batch.ref_logps, batch.mask)


def length_normalised(batch: RankedBatch) -> torch.Tensor:
    """``[B, K]`` mean per-token log-prob log pi(y) / |y|, 0 where masked."""
    return clean(batch.policy_logps, batch.mask) / clean(batch.lengths, batch.mask).clamp(min=1)


def nll_of_best(batch: RankedBatch) -> torch.Tensor:
    """``[B]`` token-mean NLL -log pi(y_best) / |y_best| of each row's top-scored response.

    0 for rows without a strict preference (all tied, a single response, or all masked),
    so those rows stay exactly 0 in every loss that adds this term.
    """
    best = best_index(batch.scores, batch.mask)[:, None]  # [B, 1]
    nll = -length_normalised(batch).gather(1, best).squeeze(1)  # [B]
    return torch.where(has_preference(batch), nll, torch.zeros_like(nll))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012).

    log1p(-exp(x)) loses precision near x=0 and log(-expm1(x)) far from it, so the
    branch switches at x = -log 2. x is clamped to -1e-6 first: at x=0 the value is -inf.
    Both branches are finite on the clamped range, so ``torch.where`` sends no NaN back.
    """
    x = x.clamp(max=-1e-6)
    near_zero = x > -0.6931471805599453
    return torch.where(near_zero, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _row_mean(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B]`` over the rows where ``rows [B]`` is True (0 when there are none)."""
    return torch.where(rows, x, torch.zeros_like(x)).sum() / rows.sum().clamp(min=1)


def preference_metrics(batch: RankedBatch, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached metrics of the implicit ``rewards [B, K]`` (the method's score of a response).

    ``rewards/accuracies``: fraction of the batch's strict pairs whose better response has
    the strictly higher reward. ``rewards/chosen`` / ``rewards/rejected``: reward of each
    row's best / worst valid response, ``rewards/margins`` their difference, and
    ``logps/chosen`` / ``logps/rejected`` the summed policy log-probs of the same two;
    all four averaged over the rows that hold a preference.
    """
    rewards = rewards.detach().float()
    pairs = better_pairs(batch.scores, batch.mask)
    rows = pairs.flatten(1).any(dim=1)
    correct = (pairwise_diff(rewards) > 0) & pairs
    best = best_index(batch.scores, batch.mask)[:, None]
    worst = worst_index(batch.scores, batch.mask)[:, None]
    logps = clean(batch.policy_logps.detach(), batch.mask)
    chosen = _row_mean(rewards.gather(1, best).squeeze(1), rows)
    rejected = _row_mean(rewards.gather(1, worst).squeeze(1), rows)
    return {
        "rewards/accuracies": correct.sum() / pairs.sum().clamp(min=1),
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "logps/chosen": _row_mean(logps.gather(1, best).squeeze(1), rows),
        "logps/rejected": _row_mean(logps.gather(1, worst).squeeze(1), rows),
    }


def reward_model_metrics(batch: RankedBatch, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached metrics of a reward model's scores ``rewards [B, K]``, named as TRL's RewardTrainer
    names them: ``accuracy`` (as ``rewards/accuracies`` of :func:`preference_metrics`), ``margin``
    (reward of each row's best response minus its worst's, over the rows holding a preference) and
    ``mean_reward`` (over the valid responses)."""
    m = preference_metrics(batch, rewards)
    valid = batch.mask
    r = torch.where(valid, rewards.detach().float(), torch.zeros_like(rewards, dtype=torch.float32))
    return {"accuracy": m["rewards/accuracies"], "margin": m["rewards/margins"],
            "mean_reward": r.sum() / valid.sum().clamp(min=1)}
