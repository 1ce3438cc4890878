"""Helpers shared by the loss families: pair masks, safe masking, per-row averaging, metrics.

Masked entries of a :class:`RankedBatch` may hold anything (0, garbage, NaN); every
loss first replaces them with 0 through ``torch.where``, whose backward sends them
exactly zero gradient.
"""

from __future__ import annotations

import torch

from alignkit.losses.batch import RankedBatch


def clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 with masked entries set to 0 (and zero gradient)."""
    return torch.where(mask, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))


def better_pairs(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` bool: ``[b, i, j]`` when response i is strictly preferred to j (both valid)."""
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
    """``[B]`` index of the lowest-scored valid response."""
    return scores.float().masked_fill(~mask, float("inf")).argmin(dim=1)


def has_preference(batch: RankedBatch) -> torch.Tensor:
    """``[B]`` bool: the row has at least one strict preference among valid responses."""
    return better_pairs(batch.scores, batch.mask).flatten(1).any(dim=1)


def nll_of_best(batch: RankedBatch) -> torch.Tensor:
    """``[B]`` token-mean NLL of each row's best response, 0 for rows without a preference."""
    logps = clean(batch.policy_logps, batch.mask)
    lengths = clean(batch.lengths, batch.mask).clamp(min=1)
    best = best_index(batch.scores, batch.mask)[:, None]
    nll = -(logps.gather(1, best) / lengths.gather(1, best)).squeeze(1)
    return torch.where(has_preference(batch), nll, torch.zeros_like(nll))


def preference_metrics(batch: RankedBatch, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy of the implicit ``rewards [B, K]`` over preferred pairs, and best/worst summaries.

    ``rewards/chosen`` is the reward of each row's best response, ``rewards/rejected``
    of its worst; both averaged over rows that hold a preference.
    """
    rewards = rewards.detach().float()
    pairs = better_pairs(batch.scores, batch.mask)
    rows = pairs.flatten(1).any(dim=1)
    n_rows = rows.sum().clamp(min=1)
    correct = (rewards[:, :, None] > rewards[:, None, :]) & pairs
    best = best_index(batch.scores, batch.mask)[:, None]
    worst = worst_index(batch.scores, batch.mask)[:, None]
    logps = clean(batch.policy_logps.detach(), batch.mask)

    def row_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(rows, x.squeeze(1), torch.zeros_like(x.squeeze(1))).sum() / n_rows

    chosen, rejected = row_mean(rewards.gather(1, best)), row_mean(rewards.gather(1, worst))
    return {
        "rewards/accuracy": correct.sum() / pairs.sum().clamp(min=1),
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margin": chosen - rejected,
        "logps/chosen": row_mean(logps.gather(1, best)),
        "logps/rejected": row_mean(logps.gather(1, worst)),
    }


def log_ratio(batch: RankedBatch) -> torch.Tensor:
    """``[B, K]`` log pi - log pi_ref, 0 where masked."""
    if batch.ref_logps is None:
        raise ValueError("this loss needs ref_logps (a reference model)")
    return clean(batch.policy_logps, batch.mask) - clean(batch.ref_logps, batch.mask)


def length_normalised(batch: RankedBatch) -> torch.Tensor:
    """``[B, K]`` mean per-token log-prob, 0 where masked."""
    return clean(batch.policy_logps, batch.mask) / clean(batch.lengths, batch.mask).clamp(min=1)
