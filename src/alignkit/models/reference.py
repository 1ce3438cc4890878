"""The reference policy: a frozen copy, the adapter-disabled base, or cached log-probs.

All three answer one question, ``logps(batch) -> [B, K]`` under no gradient, so
the trainer does not care which one runs:

* :class:`FrozenReference` holds a frozen copy of the starting policy (or another
  model) in memory.
* :class:`AdapterReference` reuses the policy's own base weights with its LoRA
  adapter switched off: no second copy of the weights.
* :class:`CachedReference` looks up log-probs computed once before training
  (by either of the above) and stored on disk, keyed by the token ids of each
  prompt and response; training then runs no reference forward at all.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch
from torch import nn

from alignkit.engine.batch import ResponseBatch
from alignkit.engine.logprobs import SequenceScorer, sequence_logps, unwrap_causal_lm


class FrozenReference:
    def __init__(self, model: nn.Module, pad_id: int, share_prompt: bool = True, chunk_size: int = 1024):
        model.eval().requires_grad_(False)
        self.scorer = SequenceScorer(model, chunk_size)
        self.pad_id, self.share_prompt = pad_id, share_prompt

    def to(self, device) -> FrozenReference:
        self.scorer.to(device)
        return self

    @torch.no_grad()
    def logps(self, batch: ResponseBatch) -> torch.Tensor:
        return sequence_logps(self.scorer, batch, pad_id=self.pad_id, share_prompt=self.share_prompt).logps


class AdapterReference:
    """The policy with its peft adapter disabled, evaluated without gradient."""

    def __init__(self, policy_scorer: nn.Module, pad_id: int, share_prompt: bool = True):
        self.policy_scorer, self.pad_id, self.share_prompt = policy_scorer, pad_id, share_prompt

    def to(self, device) -> AdapterReference:
        return self

    @torch.no_grad()
    def logps(self, batch: ResponseBatch) -> torch.Tensor:
        peft_model = _find_peft(self.policy_scorer)
        was_training = self.policy_scorer.training
        self.policy_scorer.eval()  # no dropout in the reference
        try:
            with peft_model.disable_adapter():
                return sequence_logps(
                    self.policy_scorer, batch, pad_id=self.pad_id, share_prompt=self.share_prompt
                ).logps
        finally:
            self.policy_scorer.train(was_training)


def _find_peft(module: nn.Module):
    for sub in module.modules():
        if hasattr(sub, "disable_adapter") and hasattr(sub, "peft_config"):
            return sub
    raise ValueError("reference.mode=adapter needs a LoRA policy (model.lora.enabled: true)")


def sequence_key(prompt_ids: list[int], response_ids: list[int]) -> str:
    data = torch.tensor(prompt_ids + [-1] + response_ids, dtype=torch.int64).numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class CachedReference:
    """Reference log-probs looked up by the token ids of (prompt, response)."""

    scores_any_pair = False  # only the (prompt, response) pairs of the data were cached

    def __init__(self, table: dict[str, float]):
        self.table = table

    def to(self, device) -> CachedReference:
        return self

    @classmethod
    def build(cls, source, examples, batch_size: int, cache_file: Path | None, progress: bool = True):
        """Compute every (prompt, response) log-prob once with ``source``; load it if cached.

        Under several processes each computes its shard of ``examples`` and all get the gathered
        table; the main process writes the cache. Every process must call this (a collective).
        """
        from tqdm.auto import tqdm

        from alignkit.distributed import gather_objects, is_main, shard
        from alignkit.engine.batch import collate

        if cache_file is not None and Path(cache_file).is_file():
            return cls(torch.load(cache_file, weights_only=True))
        mine = shard(examples)
        local: list[tuple[str, float]] = []
        starts = range(0, len(mine), batch_size)
        for start in tqdm(starts, desc="reference log-probs", disable=not (progress and is_main())):
            batch = collate(mine[start : start + batch_size])
            logps = source.logps(batch).cpu()
            for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
                for k, resp in enumerate(responses):
                    local.append((sequence_key(prompt, resp), float(logps[b, k])))
        table = dict(gather_objects(local))
        if cache_file is not None and is_main():
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(cache_file) + ".tmp")
            torch.save(table, tmp)
            tmp.rename(cache_file)
        return cls(table)

    def logps(self, batch: ResponseBatch) -> torch.Tensor:
        out = torch.zeros(batch.mask.shape, dtype=torch.float32)
        for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
            for k, resp in enumerate(responses):
                key = sequence_key(prompt, resp)
                if key not in self.table:
                    raise KeyError(f"no cached reference log-prob for {batch.sources and batch.sources[b]}")
                out[b, k] = self.table[key]
        return out


def cache_key(model_name: str, examples, tokenize_cfg: dict) -> str:
    """Fingerprint of (reference model, data, tokenization) naming the cache file."""
    h = hashlib.blake2b(digest_size=12)
    h.update(model_name.encode())
    h.update(repr(sorted(tokenize_cfg.items())).encode())
    for ex in examples:
        h.update(repr((ex.prompt_ids, ex.response_ids)).encode())
    return h.hexdigest()


def copy_of(model: nn.Module) -> nn.Module:
    """A detached copy of a (possibly peft-wrapped) policy's full weights."""
    import copy

    inner = unwrap_causal_lm(model)
    if hasattr(model, "merge_and_unload"):
        with contextlib.suppress(Exception):
            return copy.deepcopy(model).merge_and_unload()
    return copy.deepcopy(inner)
