"""Batched sampling of K responses per prompt with the KV cache (``transformers`` generate).

Prompts are left-padded so that every row continues from its last prompt token;
generation stops at EOS (or ``max_new_tokens``), is seeded, and reports tokens/s.
The result is token ids (ready for the engine) and decoded text (ready for rewards).
:func:`best_of_k` turns sampling plus a reward into an inference policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from alignkit.config.sampling import SamplingConfig


@dataclass
class Samples:
    """K samples for each of B prompts."""

    prompt_ids: list[list[int]]
    response_ids: list[list[list[int]]]  # B x K, EOS kept when the response ended
    texts: list[list[str]]  # B x K decoded responses, special tokens removed
    metrics: dict[str, float] = field(default_factory=dict)
    logprobs: list[list[list[float]]] | None = None  # B x K x len: the sampler's log-probs (another engine)


def _trim(row: torch.Tensor, eos_ids: set[int], pad_id: int) -> list[int]:
    out = []
    for tok in row.tolist():
        out.append(tok)
        if tok in eos_ids:
            break
    while out and out[-1] == pad_id and pad_id not in eos_ids:
        out.pop()
    return out


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], cfg: SamplingConfig, progress: bool = False) -> Samples:
    """Sample ``cfg.num_samples`` continuations of every prompt."""
    from tqdm.auto import tqdm

    from alignkit.distributed import lockstep_batches, sharded_across_processes
    from alignkit.engine.logprobs import unwrap_causal_lm

    lm = unwrap_causal_lm(model)
    device = next(lm.parameters()).device
    pad_id = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    eos_ids = {eos} | set(_as_list(getattr(lm.generation_config, "eos_token_id", None)))
    was_training = lm.training
    lm.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    responses: list[list[list[int]]] = []
    new_tokens, t0 = 0, time.perf_counter()
    # sharded weights (FSDP, ZeRO-3): every process runs as many generate calls as the busiest one,
    # each stepping until all processes have finished, so their collectives stay paired
    lockstep = sharded_across_processes(lm)
    for chunk in tqdm(lockstep_batches(prompt_ids, cfg.batch_size, lockstep), desc="sampling", disable=not progress):
        padding_call = not chunk
        chunk = chunk or [[eos]]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for j, p in enumerate(chunk):
            ids[j, width - len(p) :] = torch.tensor(p)
            attn[j, width - len(p) :] = 1
        greedy = cfg.temperature <= 0
        ids, attn = ids.to(device), attn.to(device)
        shared = _shared_prompt_cache(lm, ids, attn, cfg.num_samples) if not lockstep else {}
        if shared:  # the K samples of a prompt continue one prompt forward (rows in num_return_sequences' order)
            ids, attn = ids.repeat_interleave(cfg.num_samples, 0), attn.repeat_interleave(cfg.num_samples, 0)
        out = lm.generate(
            input_ids=ids,
            attention_mask=attn,
            **shared,
            do_sample=not greedy,
            temperature=None if greedy else cfg.temperature,
            top_k=cfg.top_k if cfg.top_k > 0 else None,
            top_p=cfg.top_p if cfg.top_p < 1 else None,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=1 if shared else cfg.num_samples,
            pad_token_id=pad_id,
            eos_token_id=sorted(eos_ids),
            use_cache=True,
            synced_gpus=lockstep,
        )[:, width:].cpu()
        if padding_call:
            continue
        rows = [_trim(r, eos_ids, pad_id) for r in out]
        new_tokens += sum(len(r) for r in rows)
        for j in range(len(chunk)):
            responses.append(rows[j * cfg.num_samples : (j + 1) * cfg.num_samples])
    elapsed = time.perf_counter() - t0
    torch.random.set_rng_state(generator_state)
    lm.train(was_training)
    texts = [[tokenizer.decode(r, skip_special_tokens=True) for r in rs] for rs in responses]
    metrics = {
        "gen/tokens_per_s": new_tokens / max(elapsed, 1e-9),
        "gen/mean_length": new_tokens / max(sum(len(rs) for rs in responses), 1),
        "gen/seconds": elapsed,
    }
    return Samples([list(p) for p in prompt_ids], responses, texts, metrics)


def _shared_prompt_cache(lm, ids: torch.Tensor, attn: torch.Tensor, k: int) -> dict:
    """``{"cache": cache}``: all but the last prompt token run once per prompt, the cache
    then repeated for its K samples, so ``generate`` starts from it instead of K prompt forwards.

    Empty (the plain path) for K = 1, one-token prompts, or a model whose cache cannot be repeated.
    Positions follow ``generate``'s own for left padding (``cumsum(mask) - 1``).
    """
    if k < 2 or ids.shape[1] < 2:
        return {}
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    out = lm(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=positions[:, :-1], use_cache=True)
    cache = out["cache"] if "cache" in out else out.get("past_key_values")  # transformers 5 renamed it
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return {}
    cache.batch_repeat_interleave(k)  # (B, ...) -> (B * K, ...), row b * K + j = sample j of prompt b
    return {"cache": cache}


@dataclass
class BestOfK:
    """The highest-reward response of each of B prompts among its K samples."""

    texts: list[str]  # B best responses
    response_ids: list[list[int]]  # B best responses as token ids (EOS kept when they ended)
    rewards: torch.Tensor  # [B] reward of the best response
    scores: torch.Tensor  # [B, K] reward of every sample
    samples: Samples  # all K samples


def best_of_k(model, tokenizer, prompt_ids: list[list[int]], cfg: SamplingConfig, reward,
              prompts: list[str] | None = None, progress: bool = False) -> BestOfK:
    """Best-of-K as an inference policy: sample ``cfg.num_samples`` responses per prompt and return the one
    ``reward.score(prompts, responses)`` rates highest (the first of equals).

    ``prompts`` are the prompt texts the reward sees; by default the decoded ``prompt_ids``.
    """
    samples = sample(model, tokenizer, prompt_ids, cfg, progress=progress)
    if prompts is None:
        prompts = [tokenizer.decode(p, skip_special_tokens=True) for p in prompt_ids]
    k = cfg.num_samples
    flat = reward.score([p for p in prompts for _ in range(k)], [t for ts in samples.texts for t in ts])
    scores = flat.float().view(len(prompt_ids), k)  # (B, K)
    best = scores.argmax(dim=1).tolist()
    return BestOfK(
        texts=[ts[i] for ts, i in zip(samples.texts, best)],
        response_ids=[rs[i] for rs, i in zip(samples.response_ids, best)],
        rewards=scores.max(dim=1).values,
        scores=scores,
        samples=samples,
    )


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
