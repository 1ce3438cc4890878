"""The post-2024 RL family as algorithms of :mod:`alignkit.train.ppo`: DAPO, Dr. GRPO, GSPO,
REINFORCE++ (and its baseline variant) and MA-RLHF's macro-action PPO.

Each is an advantage estimator and a policy loss over the shared rollout (the math is in
:mod:`alignkit.losses.rl_family` and :mod:`alignkit.losses.macro`), registered with
:func:`~alignkit.train.ppo.register_algorithm`; the trainer, the rollout and the update
are PPO's. Options any of them can use live in the ``ppo:`` section: ``clip_eps_high``
(DAPO's clip-higher), ``overlong_buffer`` (DAPO's length penalty, applied to the score),
``dynamic_sampling`` (DAPO: :func:`informative_rollout`), ``tis_cap`` (truncated
importance sampling when another engine samples).

The KL to the reference: REINFORCE++ puts ``-beta * KL_t`` in the per-token reward (its
paper's point: the return then carries the KL of the rest of the sequence); the GRPO
variants add ``beta * k3`` per token to the loss, as GRPO and TRL do (``kl_coef: 0``
drops it, as DAPO's paper does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alignkit.losses.macro import macro_gae, macro_policy_loss, ngram_macro_ids, punctuation_macro_ids
from alignkit.losses.rl import grpo_advantages, kl_penalty, last_token_index, masked_mean
from alignkit.losses.rl_family import (
    clipped_surrogate,
    constant_length_sum,
    discounted_returns,
    gspo_surrogate,
    informative_groups,
    normalization_moments,
    normalize_advantages,
    sequence_token_sum,
)
from alignkit.train.algorithms import Minibatch, group_advantages, register_algorithm, sequence_is_weights
from alignkit.train.rollout import PPOConfig, Rollout

Tensor = torch.Tensor


# ---------------------------------------------------------------- advantages


def centered_group_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig):
    """Dr. GRPO: ``A_i = r_i - mean(r)`` over a prompt's K samples, without GRPO's ``/ std``."""
    advantages = grpo_advantages(scores.view(-1, rollout.num_samples), scale=False).view(-1)  # (N,)
    return torch.where(rollout.mask, advantages[:, None], 0.0), None


def _global_normalize(returns: Tensor, mask: Tensor) -> Tensor:
    """REINFORCE++'s normalisation over the global batch: moments summed over processes (one
    all-reduce, reached by every process once per step)."""
    moments = normalization_moments(returns, mask)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(moments)
    return normalize_advantages(returns, mask, moments)


def reinforce_pp_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig):
    """REINFORCE++ (Hu et al. 2025, eqs. 8-10), as OpenRLHF computes it: the return-to-go of the shaped
    per-token rewards (``-beta * KL_t``, the score on the last token), normalised over the global batch
    (mean and biased variance over every valid token of every process, ``rsqrt(max(var, 1e-8))``);
    PPO's clipped per-token surrogate, averaged over the batch's tokens."""
    return _global_normalize(discounted_returns(rewards, rollout.mask, cfg.gamma), rollout.mask), None


def reinforce_pp_baseline_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig):
    """REINFORCE++-baseline: the score minus its prompt's mean score (K samples) before the
    returns, then as REINFORCE++ (OpenRLHF's ``reinforce_baseline``)."""
    group_mean = scores.view(-1, rollout.num_samples).mean(1).repeat_interleave(rollout.num_samples)  # (N,)
    rewards = rewards.clone()
    rewards[torch.arange(len(scores)), last_token_index(rollout.mask)] -= group_mean
    return reinforce_pp_advantages(rollout, rewards, scores, cfg)


def macro_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig):
    """MA-RLHF: GAE over macro actions (their summed rewards, the value at their first token)."""
    return macro_gae(rewards, rollout.values, rollout.macro_ids, rollout.mask, cfg.gamma, cfg.lam,
                     cfg.whiten_advantages)


def macro_segments(rollout: Rollout, tokenizer, cfg: PPOConfig) -> None:
    """MA-RLHF: each token's macro action, fixed n-grams or spans ended by punctuation."""
    if cfg.macro_action == "ngram":
        rollout.macro_ids = ngram_macro_ids(rollout.mask, cfg.macro_n)
        return
    T = rollout.mask.shape[1]
    texts = [[tokenizer.decode([tok]) for tok in ids] for rs in rollout.response_ids for ids in rs]
    rollout.macro_ids = punctuation_macro_ids(texts, T, max_length=cfg.macro_n).to(rollout.mask.device)


# ---------------------------------------------------------------- policy losses (per sample [n])


def _token_losses(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """Per-token clipped surrogate (DAPO's decoupled clip, truncated IS weights when set) + ``beta * k3``."""
    high = cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high
    per_token, stats = clipped_surrogate(logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.clip_eps, high,
                                         mb.is_weights)
    if beta != 0:
        k3 = kl_penalty(logprobs, mb.ref_logprobs, mb.mask, "k3")
        per_token = per_token + beta * k3
        stats = {**stats, "kl_loss": masked_mean(k3.detach(), mb.mask)}
    return per_token, stats


def token_sum_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """DAPO / REINFORCE++: ``sum_t l_t`` per sample; the minibatch divides by its tokens (token-level mean)."""
    per_token, stats = _token_losses(logprobs, mb, beta, cfg)
    return sequence_token_sum(per_token, mb.mask), stats


def constant_length_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """Dr. GRPO: ``sum_t l_t / max_new_tokens`` per sample, averaged over samples."""
    per_token, stats = _token_losses(logprobs, mb, beta, cfg)
    return constant_length_sum(per_token, mb.mask, mb.max_length or mb.mask.shape[1]), stats


def gspo_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """GSPO: the sequence-level clipped surrogate (+ ``beta`` x the mean per-token k3)."""
    loss, stats = gspo_surrogate(logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.seq_clip_low,
                                 cfg.seq_clip_high, sequence_is_weights(mb, cfg))
    if beta != 0:
        kl = kl_penalty(logprobs, mb.ref_logprobs, mb.mask, "k3")
        loss = loss + beta * kl.sum(1) / mb.mask.sum(1).clamp(min=1)
        stats = {**stats, "kl_loss": masked_mean(kl.detach(), mb.mask)}
    return loss, stats


def macro_action_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """MA-RLHF: PPO's clipped surrogate with one ratio per macro action."""
    return macro_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.macro_ids, mb.mask, cfg.clip_eps)


# ---------------------------------------------------------------- dynamic sampling (DAPO)


def select_prompts(rollout: Rollout, prompts: list[int]) -> Rollout:
    """The rollout restricted to ``prompts`` (indices), all K samples of each."""
    rows = rollout.rows(torch.tensor(prompts, dtype=torch.long))
    pick = lambda x: None if x is None else x[rows]  # noqa: E731
    K = rollout.num_samples
    return Rollout(
        prompt_ids=[rollout.prompt_ids[b] for b in prompts], response_ids=[rollout.response_ids[b] for b in prompts],
        prompts=[rollout.prompts[b * K + k] for b in prompts for k in range(K)],
        texts=[rollout.texts[b * K + k] for b in prompts for k in range(K)],
        mask=rollout.mask[rows], logprobs=rollout.logprobs[rows], ref_logprobs=rollout.ref_logprobs[rows],
        entropy=rollout.entropy[rows], values=pick(rollout.values), scores=rollout.scores[rows],
        segments=None if rollout.segments is None else [rollout.segments[i] for i in rows.tolist()],
        ended=rollout.ended[rows], metrics=rollout.metrics, max_new_tokens=rollout.max_new_tokens,
        macro_ids=pick(rollout.macro_ids), is_weights=pick(rollout.is_weights),
        sampler_logprobs=pick(rollout.sampler_logprobs),
    )


def concat_rollouts(parts: list[Rollout]) -> Rollout:
    """Rollouts one after the other (prompt-major), per-token tensors right-padded to the widest."""
    if len(parts) == 1:
        return parts[0]
    T = max(p.mask.shape[1] for p in parts)

    def cat(name: str):
        xs = [getattr(p, name) for p in parts]
        if xs[0] is None:
            return None
        return torch.cat([torch.nn.functional.pad(x, (0, T - x.shape[1])) if x.dim() == 2 else x for x in xs])

    first = parts[0]
    return Rollout(
        prompt_ids=sum((p.prompt_ids for p in parts), []), response_ids=sum((p.response_ids for p in parts), []),
        prompts=sum((p.prompts for p in parts), []), texts=sum((p.texts for p in parts), []),
        mask=cat("mask"), logprobs=cat("logprobs"), ref_logprobs=cat("ref_logprobs"), entropy=cat("entropy"),
        values=cat("values"), scores=cat("scores"), ended=cat("ended"), macro_ids=cat("macro_ids"),
        is_weights=cat("is_weights"), sampler_logprobs=cat("sampler_logprobs"),
        segments=None if first.segments is None else sum((p.segments for p in parts), []),
        metrics=first.metrics, max_new_tokens=first.max_new_tokens,
    )


def informative_rollout(collect: Callable[[int], Rollout], rounds: int, global_min: Callable[[int], int]) -> Rollout:
    """DAPO's dynamic sampling: keep the prompts whose K rewards differ, sampling more rounds
    (``collect(round)``, B prompts each) until B are kept, at most ``rounds`` rounds.

    Lockstep across processes: a process stops only when ``global_min`` (the minimum over
    processes of the kept counts) reaches B, so all run the same rounds; a batch still short
    after the last round is filled with dropped prompts (advantage 0 under a group baseline),
    so every process updates on exactly B prompts.
    """
    kept: list[Rollout] = []
    dropped: list[Rollout] = []
    target = n_kept = 0
    for round_ in range(rounds):
        rollout = collect(round_)
        target = len(rollout.prompt_ids)
        informative = informative_groups(rollout.scores.view(target, -1)).tolist()
        good = [b for b, ok in enumerate(informative) if ok]
        bad = [b for b, ok in enumerate(informative) if not ok]
        if good:
            kept.append(select_prompts(rollout, good))
        if bad:
            dropped.append(select_prompts(rollout, bad))
        n_kept += len(good)
        if global_min(n_kept) >= target:
            break
    pool = kept + dropped  # informative prompts first
    merged = concat_rollouts(pool)
    out = select_prompts(merged, list(range(target)))
    out.metrics = {**out.metrics, "dynamic/kept": float(min(n_kept, target)) / target, "dynamic/rounds": round_ + 1}
    return out


# ---------------------------------------------------------------- registration

register_algorithm("reinforce_pp", policy_loss=token_sum_policy_loss, token_level=True,
                   paper="Hu et al. 2025 (REINFORCE++, arXiv 2501.03262)",
                   reads=("kl_coef", "kl_estimator", "gamma", "clip_eps"))(reinforce_pp_advantages)
_GROUP = dict(min_samples=2)
register_algorithm("dapo", policy_loss=token_sum_policy_loss, token_level=True, **_GROUP,
                   paper="Yu et al. 2025 (DAPO, arXiv 2503.14476)",
                   reads=("clip_eps", "clip_eps_high", "overlong_buffer", "dynamic_sampling", "kl_coef"))(group_advantages)
register_algorithm("dr_grpo", policy_loss=constant_length_policy_loss, **_GROUP,
                   paper="Liu et al. 2025 (Dr. GRPO, arXiv 2503.20783)",
                   reads=("clip_eps", "kl_coef"))(centered_group_advantages)
register_algorithm("gspo", policy_loss=gspo_policy_loss, **_GROUP, paper="Zheng et al. 2025 (GSPO, arXiv 2507.18071)",
                   reads=("seq_clip_low", "seq_clip_high", "kl_coef"))(group_advantages)
register_algorithm("reinforce_pp_baseline", policy_loss=token_sum_policy_loss, token_level=True, **_GROUP,
                   paper="Hu et al. 2025 (REINFORCE++-baseline, arXiv 2501.03262)",
                   reads=("clip_eps", "kl_coef", "kl_estimator"))(reinforce_pp_baseline_advantages)
register_algorithm("ma_ppo", policy_loss=macro_action_policy_loss, critic=True, prepare=macro_segments,
                   paper="Chai et al. 2024 (MA-RLHF, arXiv 2410.02743)",
                   reads=("macro_action", "macro_n", "clip_eps", "kl_coef", "gamma", "lam"))(macro_advantages)
