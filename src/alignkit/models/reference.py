"""The reference policy: a frozen copy, the adapter-disabled base, or cached log-probs.

All three answer one question, ``logps(batch) -> [B, K]`` under no gradient, so
the trainer does not care which one runs:

* :class:`FrozenReference` holds a frozen copy of the starting policy (or another
  model) in memory.
* :class:`AdapterReference` reuses the policy's own base weights with its LoRA
  adapter switched off: no second copy of the weights.
* :class:`InitialPolicyReference` is the policy itself before its first step, which is
  all a precomputed reference of the starting policy needs.
* :class:`CachedReference` looks up log-probs computed before training (by either
  of the above) for the examples the run will use, stored on disk keyed by the
  reference weights and settings (the folder) and the token ids of each prompt and
  response (the entry); training then runs no reference forward at all.
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


class InitialPolicyReference:
    """The policy itself, evaluated without gradient (in eval mode): the reference while its
    weights are still the starting ones, so a precomputed reference needs no copy of them
    (for a 135M model, 0.5 GB less at the peak). Use it only before training starts."""

    def __init__(self, policy_scorer: nn.Module, pad_id: int, share_prompt: bool = True):
        self.policy_scorer, self.pad_id, self.share_prompt = policy_scorer, pad_id, share_prompt

    def to(self, device) -> InitialPolicyReference:
        return self

    def reference_weights(self) -> contextlib.AbstractContextManager:
        """What turns the policy's weights into the reference's while ``logps`` runs (nothing here)."""
        return contextlib.nullcontext()

    @torch.no_grad()
    def logps(self, batch: ResponseBatch) -> torch.Tensor:
        was_training = self.policy_scorer.training
        self.policy_scorer.eval()  # no dropout in the reference
        try:
            with self.reference_weights():
                return sequence_logps(
                    self.policy_scorer, batch, pad_id=self.pad_id, share_prompt=self.share_prompt
                ).logps
        finally:
            self.policy_scorer.train(was_training)


class AdapterReference(InitialPolicyReference):
    """The policy with its peft adapter disabled, evaluated without gradient: the base weights are
    the reference at every step, with no second copy of them."""

    def reference_weights(self) -> contextlib.AbstractContextManager:
        return _find_peft(self.policy_scorer).disable_adapter()


def _find_peft(module: nn.Module):
    for sub in module.modules():
        if hasattr(sub, "disable_adapter") and hasattr(sub, "peft_config"):
            return sub
    raise ValueError("reference.mode=adapter needs a LoRA policy (model.lora.enabled: true)")


def sequence_key(prompt_ids: list[int], response_ids: list[int]) -> str:
    data = torch.tensor(prompt_ids + [-1] + response_ids, dtype=torch.int64).numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class CachedReference:
    """Reference log-probs looked up by the token ids of (prompt, response).

    :meth:`build` scores only the pairs it is given that its cache folder lacks, so the work
    scales with the examples the run will use (:func:`alignkit.train.runtime.used_examples`), and a
    longer run, a resume or another run of the same reference model and settings reuses every
    pair already scored. The folder (see :func:`reference_fingerprint`) holds ``part-*.pt``
    files, each a dict ``{sequence_key: log-prob}`` written atomically every few batches, so an
    interrupted run keeps what it scored.
    """

    scores_any_pair = False  # only the (prompt, response) pairs of the data were cached

    def __init__(self, table: dict[str, float]):
        self.table = table

    def to(self, device) -> CachedReference:
        return self

    @classmethod
    def build(cls, source, examples, batch_size: int, cache_dir: Path | None, progress: bool = True,
              flush_every: int = 8):
        """Score the (prompt, response) pairs of ``examples`` missing from ``cache_dir`` with ``source``.

        Under several processes the main process decides what is missing, each scores its shard
        and writes its own part files, and all get the gathered table. Every process must call
        this (a collective).
        """
        from tqdm.auto import tqdm

        from alignkit.distributed import broadcast_object, gather_objects, is_main, rank, shard
        from alignkit.engine.batch import collate

        table = read_parts(cache_dir) if is_main() else {}
        missing = [i for i, ex in enumerate(examples)
                   if any(sequence_key(ex.prompt_ids, r) not in table for r in ex.response_ids)]
        missing = broadcast_object(missing)
        mine = shard([examples[i] for i in missing])
        local: list[tuple[str, float]] = []
        unsaved: dict[str, float] = {}
        starts = range(0, len(mine), batch_size)
        desc = f"reference log-probs ({len(examples) - len(missing)} of {len(examples)} cached)"
        for n, start in enumerate(tqdm(starts, desc=desc, disable=not (progress and is_main()))):
            batch = collate(mine[start : start + batch_size])
            logps = source.logps(batch).cpu()
            for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
                for k, resp in enumerate(responses):
                    local.append((sequence_key(prompt, resp), float(logps[b, k])))
                    unsaved[local[-1][0]] = local[-1][1]
            if cache_dir is not None and ((n + 1) % flush_every == 0 or start + batch_size >= len(mine)):
                write_part(cache_dir, unsaved, rank())
                unsaved = {}
        table.update(gather_objects(local))
        return cls(broadcast_object(table))  # the cached part was read on the main process only

    def logps(self, batch: ResponseBatch) -> torch.Tensor:
        out = torch.zeros(batch.mask.shape, dtype=torch.float32)
        for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
            for k, resp in enumerate(responses):
                key = sequence_key(prompt, resp)
                if key not in self.table:
                    raise KeyError(f"no cached reference log-prob for {batch.sources and batch.sources[b]}")
                out[b, k] = self.table[key]
        return out


def read_parts(cache_dir: Path | None) -> dict[str, float]:
    """Every log-prob cached in ``cache_dir`` (empty when there is none)."""
    table: dict[str, float] = {}
    if cache_dir is not None and Path(cache_dir).is_dir():
        for part in sorted(Path(cache_dir).glob("part-*.pt")):
            table.update(torch.load(part, weights_only=True))
    return table


def write_part(cache_dir: Path, entries: dict[str, float], rank: int = 0) -> None:
    """Add ``entries`` to ``cache_dir`` as one more part file, renamed into place once complete."""
    import uuid

    if not entries:
        return
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = f"part-{rank}-{uuid.uuid4().hex[:12]}.pt"
    tmp = cache_dir / f".{name}.tmp"
    torch.save(entries, tmp)
    tmp.rename(cache_dir / name)


def reference_fingerprint(model: nn.Module, settings: dict) -> str:
    """Hash of the reference weights (LoRA adapters left out: the reference is the base) and of
    the scoring settings, naming the cache folder; the data is in each entry's key."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr(sorted(settings.items())).encode())
    for name, param in unwrap_causal_lm(model).named_parameters():
        if "lora_" in name:
            continue
        h.update(name.encode())
        h.update(str(param.dtype).encode())
        h.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def copy_of(model: nn.Module) -> nn.Module:
    """A detached copy of a (possibly peft-wrapped) policy's full weights."""
    import copy

    inner = unwrap_causal_lm(model)
    if hasattr(model, "merge_and_unload"):
        with contextlib.suppress(Exception):
            return copy.deepcopy(model).merge_and_unload()
    return copy.deepcopy(inner)
