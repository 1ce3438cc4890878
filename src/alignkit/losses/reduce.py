"""The one place where per-example losses become the training scalar.

Every loss returns unreduced per-example values ``[B]``. Averaging inside each
micro-batch would make the result depend on how a global batch is split across
gradient-accumulation steps and processes (a micro-batch of 1 example would weigh
as much as one of 8). Instead each micro-batch contributes ``sum(losses) / N``,
where ``N`` counts the units (prompts, or tokens for SFT) of the whole global
step, so the accumulated gradient is the exact global mean whatever the split.
Data parallelism averages gradients over ``world_size`` processes, so each
process scales its contribution by ``world_size`` to keep the global mean.
"""

from __future__ import annotations

import torch


def global_mean(loss_sum: torch.Tensor, global_count: float, world_size: int = 1) -> torch.Tensor:
    """Contribution of one micro-batch to the global-batch mean.

    Args:
        loss_sum: scalar, the sum of this micro-batch's per-unit losses.
        global_count: number of units (prompts or tokens) in the whole global step,
            summed over accumulation steps and processes.
        world_size: number of data-parallel processes whose gradients are averaged.
    """
    return loss_sum * (world_size / max(float(global_count), 1.0))
