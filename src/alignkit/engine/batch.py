"""A batch of B prompts with K responses each, as ragged token lists plus [B, K] tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignkit.data.schema import TokenizedExample


@dataclass
class ResponseBatch:
    """What the engine consumes.

    Token ids stay ragged (lists) because the engine chooses the tensor layout
    (prompt-shared packing or one padded row per response); preference data is
    padded to ``[B, K]`` with ``mask`` False for missing responses.
    """

    prompt_ids: list[list[int]]  # B prompts
    response_ids: list[list[list[int]]]  # B x K_b responses
    scores: torch.Tensor  # [B, K] float32, 0 where masked
    mask: torch.Tensor  # [B, K] bool
    desirable: torch.Tensor | None = None  # [B, K] bool for unpaired data
    sources: list[str] | None = None  # FILE:LINE per prompt

    @property
    def batch_size(self) -> int:
        return len(self.prompt_ids)

    @property
    def max_responses(self) -> int:
        return self.mask.shape[1]

    def num_tokens(self) -> int:
        """Non-padding tokens the engine processes with prompt sharing (prompt once per prompt)."""
        return sum(len(p) + sum(len(r) for r in rs) for p, rs in zip(self.prompt_ids, self.response_ids))

    def response_lengths(self) -> torch.Tensor:
        lengths = torch.zeros(self.mask.shape, dtype=torch.long)
        for b, rs in enumerate(self.response_ids):
            for k, r in enumerate(rs):
                lengths[b, k] = len(r)
        return lengths


def collate(examples: Sequence[TokenizedExample]) -> ResponseBatch:
    """Stack tokenized examples; K may vary by row (missing responses are masked)."""
    width = max((len(e.response_ids) for e in examples), default=0)
    scores = torch.zeros(len(examples), width, dtype=torch.float32)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    has_desirable = any(e.desirable is not None for e in examples)
    desirable = torch.zeros(len(examples), width, dtype=torch.bool) if has_desirable else None
    for b, ex in enumerate(examples):
        k = len(ex.response_ids)
        mask[b, :k] = True
        if ex.scores is not None:
            scores[b, :k] = torch.tensor(ex.scores, dtype=torch.float32)
        if desirable is not None and ex.desirable is not None:
            desirable[b, :k] = torch.tensor(ex.desirable, dtype=torch.bool)
    return ResponseBatch(
        prompt_ids=[list(e.prompt_ids) for e in examples],
        response_ids=[[list(r) for r in e.response_ids] for e in examples],
        scores=scores,
        mask=mask,
        desirable=desirable,
        sources=[e.source for e in examples],
    )
