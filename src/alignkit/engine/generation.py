"""Batched sampling of K responses per prompt with the KV cache.

Prompts are left-padded so that every row continues from its last prompt token;
generation stops at EOS (or ``max_new_tokens``), is seeded, and reports tokens/s.
The result is token ids (ready for the engine) and decoded text (ready for rewards).
:func:`best_of_k` turns sampling plus a reward into an inference policy.

The decode loop is :func:`decode`, a lean one (about 3x less Python per token than
``transformers``' ``generate`` on a 2-core CPU): the prompt runs once per prompt and its KV
cache is repeated for the K samples, the LM head runs on the last position only, the loop
stops as soon as every row has ended, and each step keeps the sampled token's log-prob
and the entropy under the model's own distribution (temperature 1, the distribution the
RL losses train), so that an on-policy trainer need not score its samples again. Under
sharded weights (FSDP, ZeRO-3) every process must step in lockstep, which ``generate``'s
``synced_gpus`` does: that case keeps ``generate``.
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
    # the sampling model's own per-token log-probs and entropies [B * K, T] (fp32, right-padded, temperature 1:
    # the distribution the losses train), from the decode logits; None when generate() sampled (lockstep)
    policy_logprobs: torch.Tensor | None = None
    policy_entropy: torch.Tensor | None = None


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
    token_logprobs: list[torch.Tensor] = []  # per chunk, [rows, steps]
    token_entropy: list[torch.Tensor] = []
    for chunk in tqdm(lockstep_batches(prompt_ids, cfg.batch_size, lockstep), desc="sampling", disable=not progress):
        padding_call = not chunk
        chunk = chunk or [[eos]]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for j, p in enumerate(chunk):
            ids[j, width - len(p) :] = torch.tensor(p)
            attn[j, width - len(p) :] = 1
        ids, attn = ids.to(device), attn.to(device)
        if lockstep:
            out = _generate_in_lockstep(lm, ids, attn, cfg, pad_id, eos_ids)
        else:
            out, logps, ent = decode(lm, ids, attn, cfg, eos_ids, pad_id)
            token_logprobs.append(logps)
            token_entropy.append(ent)
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
    samples = Samples([list(p) for p in prompt_ids], responses, texts, metrics)
    if token_logprobs:
        samples.policy_logprobs, samples.policy_entropy = _right_aligned(token_logprobs), _right_aligned(token_entropy)
    return samples


def _right_aligned(parts: list[torch.Tensor]) -> torch.Tensor:
    """Chunks ``[rows_i, steps_i]`` stacked into one ``[sum rows, max steps]``, zero-padded on the right."""
    T = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts])


def _generate_in_lockstep(lm, ids: torch.Tensor, attn: torch.Tensor, cfg: SamplingConfig, pad_id: int,
                          eos_ids: set[int]) -> torch.Tensor:
    """``transformers``' ``generate`` with ``synced_gpus``: the new tokens ``[B * K, n]`` (CPU)."""
    greedy = cfg.temperature <= 0
    return lm.generate(
        input_ids=ids, attention_mask=attn, do_sample=not greedy, temperature=None if greedy else cfg.temperature,
        top_k=cfg.top_k if cfg.top_k > 0 else None, top_p=cfg.top_p if cfg.top_p < 1 else None,
        max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.num_samples, pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids), use_cache=True, synced_gpus=True,
    )[:, ids.shape[1]:].cpu()


def sampling_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """``[R, V]`` logits of the sampling distribution: ``/ temperature``, then top-k, then top-p
    (``transformers``' warper order; top-p keeps the smallest set whose mass reaches ``top_p``,
    and at least the most likely token)."""
    x = logits / cfg.temperature
    if 0 < cfg.top_k < x.shape[-1]:
        kth = x.topk(cfg.top_k, dim=-1).values[:, -1:]  # (R, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p < 1:
        sorted_x, order = x.sort(dim=-1)  # ascending
        drop = sorted_x.softmax(-1).cumsum(-1) <= 1 - cfg.top_p  # the low tail holding <= 1 - top_p of the mass
        drop[:, -1] = False
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return x


def sample_step(logits: torch.Tensor, cfg: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decode step from raw logits ``[R, V]`` (fp32): the drawn tokens, their log-probs and the
    entropies, both at temperature 1 (the model's own distribution), each ``[R]``.

    The draw is by inverse CDF, ``token = min{i : cumsum(p)_i > u * sum(p)}``, ``u ~ U[0, 1)``: an exact
    sample of ``p`` (a token of probability 0 is never drawn: its CDF step is empty) that costs one
    cumsum, where ``torch.multinomial`` over a 49k vocabulary took 30x longer on a CPU.
    ``H = lse - sum_v p_v x_v`` with ``p = softmax(x)``, ``lse = logsumexp(x)``.
    """
    lse = logits.logsumexp(-1, keepdim=True)  # (R, 1)
    p = (logits - lse).exp()  # the model's distribution at temperature 1, (R, V)
    finite = logits.clamp(min=torch.finfo(logits.dtype).min)  # a -inf logit (a masked token): 0 * min, not NaN
    entropy = lse.squeeze(-1) - torch.linalg.vecdot(p, finite)
    if cfg.temperature <= 0:
        token = logits.argmax(-1)
    else:
        plain = cfg.temperature == 1 and cfg.top_k <= 0 and cfg.top_p >= 1
        q = p if plain else sampling_logits(logits, cfg).softmax(-1)  # the sampling distribution
        cdf = q.cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[1] - 1)
    logp = logits.gather(-1, token[:, None]).squeeze(-1) - lse.squeeze(-1)
    return token, logp, entropy


@torch.no_grad()
def decode(lm, ids: torch.Tensor, attn: torch.Tensor, cfg: SamplingConfig, eos_ids: set[int], pad_id: int):
    """Sample ``cfg.num_samples`` continuations of each left-padded prompt row of ``ids [B, P]``.

    Returns the new tokens ``[B * K, n]`` (CPU; rows prompt-major, pad after a row's EOS), and the
    sampled tokens' log-probs and entropies under the model at temperature 1 ``[B * K, n]`` (fp32,
    0 after EOS). ``n <= max_new_tokens``: the loop stops once every row has ended.

    1. the prompt: one forward of B rows (all but the last token when the cache can be repeated,
       :func:`_shared_prompt_cache`; else the full prompts of B * K rows), LM head skipped;
    2. each step: one token per row through the cache, the LM head on that position only;
       ``log_softmax`` of the raw logits gives the log-prob and entropy, :func:`sampling_logits`
       the distribution the token is drawn from.
    """
    K = cfg.num_samples
    positions = (attn.cumsum(-1) - 1).clamp(min=0)  # generate's positions for left padding
    shared = _shared_prompt_cache(lm, ids, attn, K)
    ids, attn, positions = (x.repeat_interleave(K, 0) for x in (ids, attn, positions))
    cache = shared.get("cache")
    step_ids, step_pos = (ids[:, -1:], positions[:, -1:]) if cache is not None else (ids, positions)
    head_only_last = {"logits_to_keep": 1} if _accepts(lm, "logits_to_keep") else {}
    cache_key = "cache" if _accepts(lm, "cache") else "past_key_values"  # transformers 5 renamed it
    rows = ids.shape[0]
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    eos = torch.tensor(sorted(eos_ids), device=ids.device)
    tokens, logps, ents = [], [], []
    for _ in range(cfg.max_new_tokens):
        out = lm(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, use_cache=True,
                 **{cache_key: cache}, **head_only_last)
        cache = _cache_of(out)
        token, logp, entropy = sample_step(out.logits[:, -1].float(), cfg)  # (R,) each
        token = torch.where(done, pad_id, token)
        live = (~done).float()
        logps.append(logp * live)
        ents.append(entropy * live)
        tokens.append(token)
        done = done | torch.isin(token, eos)
        if bool(done.all()):
            break
        step_ids, step_pos = token[:, None], step_pos[:, -1:] + 1
        attn = torch.cat([attn, attn.new_ones(rows, 1)], dim=1)
    del cache  # free the KV cache before the caller's next allocation (the update)
    if not tokens:
        empty = ids.new_zeros(rows, 0)
        return empty.cpu(), empty.float(), empty.float()
    return torch.stack(tokens, 1).cpu(), torch.stack(logps, 1), torch.stack(ents, 1)


def _cache_of(out):
    return out["cache"] if "cache" in out else out.get("past_key_values")  # transformers 5 renamed it


def _accepts(lm, name: str) -> bool:
    import inspect

    return name in inspect.signature(lm.forward).parameters


def _shared_prompt_cache(lm, ids: torch.Tensor, attn: torch.Tensor, k: int) -> dict:
    """``{"cache": cache}``: all but the last prompt token run once per prompt, the cache
    then repeated for its K samples, so ``generate`` starts from it instead of K prompt forwards.

    Empty (the plain path) for K = 1, one-token prompts, or a model whose cache cannot be repeated.
    Positions follow ``generate``'s own for left padding (``cumsum(mask) - 1``).
    """
    if k < 2 or ids.shape[1] < 2:
        return {}
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    head_only_last = {"logits_to_keep": 1} if _accepts(lm, "logits_to_keep") else {}  # these logits go unused
    out = lm(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=positions[:, :-1], use_cache=True,
             **head_only_last)
    cache = _cache_of(out)
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
