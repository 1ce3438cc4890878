"""Sampling from the geometric mixture of two models, token by token (Nash-MD's alternative policy).

Munos et al. 2023 ("Nash Learning from Human Feedback", arXiv 2312.00886, sec. 6-7) regularise
the policy towards the geometric mixture ``pi_mix(y|x) ∝ pi(y|x)^(1-m) pi_ref(y|x)^m``; the
practical version mixes at the token level, each next token drawn from

    log pi_mix(. | x, y_<t) = log_softmax((1 - m) log pi(. | x, y_<t) + m log pi_ref(. | x, y_<t))

as TRL's ``GeometricMixtureWrapper`` did (TRL 1.13, ``trl/experimental/nash_md/nash_md_trainer.py``
lines 48-94: ``log_softmax(m * ref_logits + (1 - m) * logits)``, the same distribution, since
log-softmax only shifts each row by a constant). ``m = 0`` is the policy itself (self-play),
``m = 1`` the reference.

Both models run with their own KV cache; prompts are left-padded, positions follow
``generate``'s (``cumsum(mask) - 1``). Temperature, top-k and top-p of
:class:`~alignkit.config.SamplingConfig` apply to the mixed distribution; temperature 0 is greedy.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from alignkit.engine.generation import Samples, _as_list, _trim


def mixture_logprobs(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mixture_coef: float) -> torch.Tensor:
    """``[N, V]`` next-token log-probs of the geometric mixture (fp32): ``log_softmax((1-m) log pi + m log pi_ref)``."""
    mixed = ((1 - mixture_coef) * torch.log_softmax(policy_logits.float(), -1)
             + mixture_coef * torch.log_softmax(reference_logits.float(), -1))
    return torch.log_softmax(mixed, -1)


def _draw(logprobs: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """One token per row ``[N]`` from ``logprobs`` ``[N, V]`` under temperature / top-k / top-p."""
    if cfg.temperature <= 0:
        return logprobs.argmax(-1)
    logits = logprobs / cfg.temperature
    if cfg.top_k > 0:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if cfg.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > cfg.top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).flatten().to(logprobs.device)


def _step(lm, ids, attn, positions, cache):
    out = lm(input_ids=ids, attention_mask=attn, position_ids=positions, cache=cache, use_cache=True)
    return out.logits[:, -1], out.get("cache", out.get("past_key_values"))


@torch.no_grad()
def sample_mixture(policy, reference, tokenizer, prompt_ids: list[list[int]], cfg, mixture_coef: float,
                   progress: bool = False) -> Samples:
    """``cfg.num_samples`` continuations of every prompt drawn from the token-level geometric mixture."""
    from tqdm.auto import tqdm

    from alignkit.engine.logprobs import unwrap_causal_lm

    lm, ref = unwrap_causal_lm(policy), unwrap_causal_lm(reference)
    device = next(lm.parameters()).device
    pad_id, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    eos_ids = {eos} | set(_as_list(getattr(lm.generation_config, "eos_token_id", None)))
    eos_tensor = torch.tensor(sorted(eos_ids), device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    was_training = lm.training, ref.training
    lm.eval(), ref.eval()
    responses: list[list[list[int]]] = []
    new_tokens, t0, k = 0, time.perf_counter(), cfg.num_samples
    for start in tqdm(range(0, len(prompt_ids), cfg.batch_size), desc="sampling (mixture)", disable=not progress):
        chunk = [p for p in prompt_ids[start : start + cfg.batch_size] for _ in range(k)]  # K rows per prompt
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for j, p in enumerate(chunk):
            ids[j, width - len(p) :], attn[j, width - len(p) :] = torch.tensor(p), 1
        ids, attn = ids.to(device), attn.to(device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # (n, W)
        cache_lm = cache_ref = None
        tokens, done = [], torch.zeros(len(chunk), dtype=torch.bool, device=device)
        for _ in range(cfg.max_new_tokens):
            logits_lm, cache_lm = _step(lm, ids, attn, positions, cache_lm)
            logits_ref, cache_ref = _step(ref, ids, attn, positions, cache_ref)
            token = _draw(mixture_logprobs(logits_lm, logits_ref, mixture_coef), cfg, generator)  # (n,)
            token = torch.where(done, torch.full_like(token, pad_id), token)
            tokens.append(token)
            done |= torch.isin(token, eos_tensor)
            if bool(done.all()):
                break
            ids, positions = token[:, None], positions[:, -1:] + 1
            attn = torch.cat([attn, torch.ones_like(ids)], 1)
        out = torch.stack(tokens, 1).cpu() if tokens else torch.zeros(len(chunk), 0, dtype=torch.long)
        rows = [_trim(r, eos_ids, pad_id) for r in out]
        new_tokens += sum(len(r) for r in rows)
        responses += [rows[j * k : (j + 1) * k] for j in range(len(chunk) // k)]
    lm.train(was_training[0]), ref.train(was_training[1])
    elapsed = time.perf_counter() - t0
    texts = [[tokenizer.decode(r, skip_special_tokens=True) for r in rs] for rs in responses]
    metrics = {"gen/tokens_per_s": new_tokens / max(elapsed, 1e-9),
               "gen/mean_length": new_tokens / max(sum(len(rs) for rs in responses), 1), "gen/seconds": elapsed}
    return Samples([list(p) for p in prompt_ids], responses, texts, metrics)


SEED_OFFSET = 7_919  # the seed stream of a second source, apart from the policy's


def with_own_seeds(sampler):
    """``sampler`` (the call shape of :func:`~alignkit.engine.generation.sample`) drawing from its own seed
    stream: while the policy still equals the starting one, a reference or mixture sample drawn with the
    policy's seed would be the policy's own sample (a tie: no preference, no gradient)."""
    def draw(model, tokenizer, prompt_ids, sampling, progress=False):
        return sampler(model, tokenizer, prompt_ids, replace(sampling, seed=sampling.seed + SEED_OFFSET),
                       progress=progress)
    return draw


def mixture_sampler(reference, mixture_coef: float):
    """A sampler of the geometric mixture of the model it is called with and ``reference`` (its own seeds)."""
    def mixed(model, tokenizer, prompt_ids, sampling, progress=False):
        return sample_mixture(model, reference, tokenizer, prompt_ids, sampling, mixture_coef, progress)
    return with_own_seeds(mixed)
