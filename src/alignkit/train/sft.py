"""Supervised fine-tuning: NLL of response tokens (all tokens for ``{text}`` rows).

The loss is averaged over response tokens of the whole global batch (the
per-token mean), so it does not depend on how the batch is split. Rows with
several responses train on the best one (e.g. pairwise data: the chosen).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignkit.data.schema import TokenizedExample
from alignkit.engine import collate, sequence_logps


def best_response_only(ex: TokenizedExample) -> TokenizedExample:
    if len(ex.response_ids) <= 1:
        return ex
    best = max(range(len(ex.response_ids)), key=lambda k: (ex.scores or [0] * len(ex.response_ids))[k])
    return TokenizedExample(ex.prompt_ids, [ex.response_ids[best]], None, None, ex.source)


class SFTMethod:
    def __init__(self, pad_id: int, share_prompt: bool = True):
        self.pad_id, self.share_prompt = pad_id, share_prompt

    def units(self, examples: Sequence[TokenizedExample]) -> float:
        return float(sum(len(r) for ex in examples for r in ex.response_ids))

    def loss(self, module, examples: Sequence[TokenizedExample]) -> tuple[torch.Tensor, dict[str, float]]:
        out = sequence_logps(module, collate(examples), pad_id=self.pad_id, share_prompt=self.share_prompt)
        nll_sum = -out.logps.sum()
        tokens = max(self.units(examples), 1.0)
        mean = float(nll_sum.detach()) / tokens
        return nll_sum, {"loss": mean, "nll": mean}

    @torch.no_grad()
    def evaluate(self, module, examples: Sequence[TokenizedExample], batch_size: int) -> dict[str, float]:
        module.eval()
        total, tokens = 0.0, 0.0
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            nll, _ = self.loss(module, chunk)
            total, tokens = total + float(nll.detach()), tokens + self.units(chunk)
        mean = total / max(tokens, 1.0)
        return {"nll": mean, "perplexity": float(torch.tensor(mean).exp())}
