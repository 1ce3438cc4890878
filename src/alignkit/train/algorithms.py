"""The on-policy RL algorithms (PPO, RLOO, GRPO): an advantage estimator and a policy loss each.

:data:`ALGORITHMS` is an open registry like ``alignkit.losses.LOSSES``: registering an
advantage estimator with its policy loss (:func:`register_algorithm`) makes a method of the
PPO trainer (:mod:`alignkit.train.ppo`), which runs every algorithm the same way: rollout,
KL-shaped rewards, ``advantages``, then ``policy_loss`` over minibatches.

- ``advantages(rollout, rewards, scores, cfg) -> (advantages [N, T], returns [N, T] or None)``:
  ``rewards`` are the shaped per-token rewards, ``scores`` the processed task scores ``[N]``
  (N = B * K rows, prompt-major); returns are the critic's targets (critic algorithms only).
- ``policy_loss(logprobs, minibatch, beta, cfg) -> (loss [n], metrics)``: per-sample losses of
  the ``n`` rows of a :class:`Minibatch` under the current policy's ``logprobs`` ``[n, L]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignkit.config.rl import PPOConfig
from alignkit.losses.rl import (
    gae,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_policy_loss,
    rloo_advantages,
    whiten,
)
from alignkit.losses.rl_family import truncated_sequence_importance_weights
from alignkit.train.rollout import Rollout

Tensor = torch.Tensor
AdvantageFn = Callable[[Rollout, Tensor, Tensor, PPOConfig], tuple[Tensor, "Tensor | None"]]


@dataclass(frozen=True)
class Algorithm:
    name: str
    advantages: AdvantageFn  # (rollout, shaped rewards, scores, cfg) -> (advantages, returns or None)
    policy_loss: Callable[..., tuple[Tensor, dict[str, Tensor]]]  # (logprobs, minibatch, beta, cfg)
    critic: bool  # trains a value model (its returns are the value targets)
    min_samples: int  # samples per prompt it needs (a group baseline needs 2)
    paper: str = ""  # shown by `alignkit methods`
    reads: tuple[str, ...] = ()  # the ppo: fields that matter most to it, shown with their defaults
    token_level: bool = False  # the policy loss sums over tokens; the minibatch mean is over tokens, not samples
    prepare: Callable[..., None] | None = None  # (rollout, tokenizer, cfg): per-rollout data it needs


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, *, policy_loss: Callable, critic: bool = False, min_samples: int = 1,
                       **options) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register the decorated advantage estimator with ``policy_loss`` as on-policy method ``name``.

    ``options``: the optional :class:`Algorithm` fields (``paper``, ``reads``, ``token_level``, ``prepare``).
    """
    def wrap(fn: AdvantageFn) -> AdvantageFn:
        if name in ALGORITHMS:
            raise ValueError(f"algorithm {name!r} registered twice")
        ALGORITHMS[name] = Algorithm(name, fn, policy_loss, critic, min_samples, **options)
        return fn

    return wrap


# ---------------------------------------------------------------- policy losses (per sample [n])


@dataclass
class Minibatch:
    """The rollout's rows of one forward, cut to its width ``[n, L]``."""

    old_logprobs: Tensor
    ref_logprobs: Tensor
    advantages: Tensor
    mask: Tensor
    old_values: Tensor | None
    returns: Tensor | None
    macro_ids: Tensor | None = None  # MA-RLHF: each token's macro action
    is_weights: Tensor | None = None  # truncated importance weights of the rollout/training mismatch
    rollout_logprobs: Tensor | None = None  # the sampling engine's log-probs (with is_weights): sequence-level TIS
    max_length: int = 0  # the generation budget (sampling.max_new_tokens)


def token_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """PPO: ``max(-A_t * ratio_t, -A_t * clip(ratio_t))`` per token, ``ratio_t = pi / pi_old``."""
    return ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.clip_eps)


def sequence_is_weights(mb: Minibatch, cfg: PPOConfig) -> Tensor | None:
    """``[n]`` truncated IS weights of whole responses (``ppo.tis_cap``, another engine sampled), or None."""
    if mb.rollout_logprobs is None or cfg.tis_cap is None:
        return None
    return truncated_sequence_importance_weights(mb.old_logprobs, mb.rollout_logprobs, mb.mask, cfg.tis_cap)


def sequence_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """RLOO: one action per sample, ``ratio = pi(y|x) / pi_old(y|x)``; at ratio 1 this is REINFORCE."""
    seq_logprob = masked_sum(logprobs, mb.mask, dim=1)[:, None]  # log pi(y|x), (n, 1)
    old_seq_logprob = masked_sum(mb.old_logprobs, mb.mask, dim=1)[:, None]
    one = torch.ones_like(seq_logprob, dtype=torch.bool)
    loss, stats = ppo_policy_loss(seq_logprob, old_seq_logprob, mb.advantages[:, :1], one, cfg.clip_eps)
    weights = sequence_is_weights(mb, cfg)
    return (loss if weights is None else loss * weights), stats


def grpo_policy_loss(logprobs: Tensor, mb: Minibatch, beta: float, cfg: PPOConfig):
    """GRPO: PPO's per-token surrogate + ``beta * k3(pi, pi_ref)`` per token (Shao et al. 2024, sec. 4.1)."""
    loss, stats = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.clip_eps)
    if beta == 0:  # no reference was run (see alignkit.train.ppo.uses_no_reference)
        return loss, stats
    k3 = kl_penalty(logprobs, mb.ref_logprobs, mb.mask, "k3")  # (n, L)
    kl = masked_mean(k3, mb.mask, dim=1)  # (n,)
    return loss + beta * kl, {**stats, "kl_loss": masked_mean(k3.detach(), mb.mask)}  # token mean, as TRL's `kl`


# ---------------------------------------------------------------- advantages (one registered algorithm each)


@register_algorithm("ppo", policy_loss=token_policy_loss, critic=True,
                    paper="Ouyang et al. 2022 (InstructGPT); Schulman et al. 2017",
                    reads=("clip_eps", "kl_coef", "gamma", "lam", "vf_coef"))
def gae_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig) -> tuple[Tensor, Tensor]:
    """PPO: GAE over the old values; ``returns = advantages + values`` are the critic's targets."""
    advantages, returns = gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, rollout.mask)
    return advantages, returns


@register_algorithm("rloo", policy_loss=sequence_policy_loss, min_samples=2, paper="Ahmadian et al. 2024",
                    reads=("kl_coef",))
def leave_one_out_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig) -> tuple[Tensor, None]:
    """RLOO: ``A_i = R_i - mean_{j != i} R_j`` over a prompt's K samples, ``R = r - beta * KL`` summed."""
    K = rollout.num_samples
    returns = rewards.sum(1)  # R_i, (N,)
    advantages = rloo_advantages(returns.view(-1, K)).view(-1)  # (N,)
    return torch.where(rollout.mask, advantages[:, None], 0.0), None


@register_algorithm("grpo", policy_loss=grpo_policy_loss, min_samples=2, paper="Shao et al. 2024 (DeepSeekMath)",
                    reads=("clip_eps", "kl_coef"))
def group_advantages(rollout: Rollout, rewards: Tensor, scores: Tensor, cfg: PPOConfig) -> tuple[Tensor, None]:
    """GRPO: ``A_i = (r_i - mean(r)) / std(r)`` over a prompt's K samples, the same on every token."""
    advantages = grpo_advantages(scores.view(-1, rollout.num_samples)).view(-1)  # (N,)
    return torch.where(rollout.mask, advantages[:, None], 0.0), None
