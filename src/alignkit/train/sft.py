"""Supervised fine-tuning: NLL of response tokens (all tokens for ``{text}`` rows).

The loss is averaged over response tokens of the whole global batch (the
per-token mean), so it does not depend on how the batch is split. Rows with
several responses train on the best one (e.g. pairwise data: the chosen).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.schema import TokenizedExample
from alignkit.engine import collate, sequence_logps
from alignkit.train.methods import MethodSpec, register_method


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


def train_sft(cfg) -> Path:
    """Supervised fine-tuning on the best response of each row (the chosen one of a pair)."""
    from alignkit.data.pipeline import map_rows
    from alignkit.engine import SequenceScorer
    from alignkit.train.build import policy_and_data, policy_saver
    from alignkit.train.loop import train_loop

    model, tokenizer, train, held_out = policy_and_data(cfg, need="responses")
    train = map_rows(best_response_only, train)  # lazily: only the rows the run reads are tokenized
    held_out = [best_response_only(ex) for ex in held_out]
    method = SFTMethod(tokenizer.pad_token_id, cfg.engine.share_prompt)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    train_loop(cfg.train, method, scorer, train, eval_examples=held_out, on_save=policy_saver(tokenizer, cfg.model.lora.save_merged),
               desc="sft")
    return Path(cfg.train.output_dir)


register_method(MethodSpec("sft", "sft", train_sft, data="sft", sections=("engine",)))
