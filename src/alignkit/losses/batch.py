"""The common input of every preference loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RankedBatch:
    """B prompts, each with up to K responses, as ``[B, K]`` tensors.

    Attributes:
        policy_logps: ``[B, K]`` float32, summed response log-probs under the policy.
        ref_logps: ``[B, K]`` float32 under the reference model, or ``None`` for
            reference-free methods.
        lengths: ``[B, K]`` response token counts (>= 1 where ``mask`` is True).
        scores: ``[B, K]`` higher is better; equal scores are ties and never a
            preference. Pairwise data is K=2 with the chosen response scoring higher.
        mask: ``[B, K]`` bool, False for padding responses when K varies by row.
        desirable: ``[B, K]`` bool for unpaired (KTO) data, else ``None``; when
            ``None``, KTO treats each prompt's top-scored response as desirable and
            the others as undesirable.
        mismatched_log_ratios: ``[M]`` float32, log pi/pi_ref (y_{i-1} | x_i) of every
            response of row i-1 put under prompt i (completions cycled by one within the
            micro-batch), from every process: KTO's estimate of KL(pi || pi_ref). Filled
            by the trainer for a loss registered with ``mismatched_pairs=True``; else ``None``.
    """

    policy_logps: torch.Tensor
    ref_logps: torch.Tensor | None
    lengths: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor
    desirable: torch.Tensor | None = None
    mismatched_log_ratios: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.policy_logps.shape[0]

    @property
    def num_responses(self) -> int:
        return self.policy_logps.shape[1]
