"""The post-2024 GRPO/PPO family: REINFORCE++, Dr. GRPO, DAPO, GSPO and truncated importance sampling.

Same layout as :mod:`alignkit.losses.rl`: per-token tensors are right-padded ``[N, T]``
with a bool ``mask [N, T]`` (True on response tokens), masked positions are replaced by 0
before any arithmetic, group tensors are ``[B, K]`` (B prompts x K samples).

The methods differ in three places, kept apart here so each is one small function:

1. the advantage (:func:`discounted_returns` + :func:`normalize_advantages` for REINFORCE++,
   :func:`alignkit.losses.rl.grpo_advantages` with ``scale=False`` for Dr. GRPO and the
   REINFORCE++ baseline);
2. the per-token surrogate (:func:`clipped_surrogate`: PPO's, with DAPO's decoupled
   ``clip_low`` / ``clip_high``; :func:`gspo_surrogate`: one sequence-level ratio);
3. the reduction of per-token losses to the scalar. A loss here returns per-sequence
   values ``[N]`` whose *sum* is divided once by the caller
   (:func:`alignkit.losses.reduce.global_mean`): :func:`sequence_token_mean` (GRPO:
   each sequence weighs the same), :func:`sequence_token_sum` (DAPO: divided by the
   global count of tokens, every token weighs the same), :func:`constant_length_sum`
   (Dr. GRPO: divided by ``N * max_new_tokens``, no length normalisation).
"""

from __future__ import annotations

import torch

from alignkit.losses.rl import clipped_terms, masked_mean, masked_sum

# ---------------------------------------------------------------- REINFORCE++


@torch.no_grad()
def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Return-to-go ``G_t = r_t + gamma * G_{t+1}`` ``[N, T]``, 0 past the last valid token.

    REINFORCE++ (Hu et al. 2025, eq. 8): with the per-token rewards of
    :func:`alignkit.losses.rl.shape_rewards` (``-beta * KL_t`` everywhere, the score on
    the last token) and ``gamma = 1``, ``A_t = r(x, y) - beta * sum_{i >= t} KL_i``.
    """
    rewards = torch.where(mask, rewards, 0.0)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # G_{t+1}, (N,)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return torch.where(mask, returns, 0.0)


@torch.no_grad()
def normalization_moments(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[count, sum, sum of squares]`` (float64) of the valid entries of ``x``.

    Moments add up across processes (``accelerator.reduce(moments, "sum")``), so the
    normalisation of :func:`normalize_advantages` can be over the global batch and every
    process gets the same mean and std: one collective, the same on every process.
    """
    x = torch.where(mask, x, 0.0).double()
    return torch.stack([mask.sum().double(), x.sum(), x.pow(2).sum()])


@torch.no_grad()
def normalize_advantages(x: torch.Tensor, mask: torch.Tensor, moments: torch.Tensor | None = None) -> torch.Tensor:
    """Global-batch advantage normalisation of REINFORCE++ (Hu et al. 2025, eq. 10), 0 at masked.

    ``A' = (A - mean) / sqrt(max(var, 1e-8))`` with mean and the biased variance taken over
    every valid token of the batch (``moments`` from :func:`normalization_moments`, summed
    over processes; default: this batch's). This is OpenRLHF's normalisation
    (``experience_maker.py``, ``compute_advantages_and_returns``: ``var.clamp(min=1e-8).rsqrt()``).
    """
    count, total, squares = (normalization_moments(x, mask) if moments is None else moments).unbind()
    if count == 0:
        raise ValueError("normalize_advantages: the mask selects no entries")
    mean = total / count
    var = (squares / count - mean**2).clamp(min=1e-8)  # biased, (,)
    return torch.where(mask, ((x - mean) * var.rsqrt()).to(x.dtype), 0.0)


# ---------------------------------------------------------------- DAPO overlong shaping


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), ``[N]``, <= 0.

    With ``L_max = max_length`` and ``L_cache = buffer``::

        R(y) = 0                                  |y| <= L_max - L_cache
             = ((L_max - L_cache) - |y|) / L_cache   L_max - L_cache < |y| <= L_max
             = -1                                 L_max < |y|

    times ``factor``; added to the task score. (As OpenRLHF's ``overlong_buffer_len``.)
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"overlong buffer must be in (0, max_length={max_length}], got {buffer}")
    excess = (lengths.float() - (max_length - buffer)).clamp(min=0.0, max=float(buffer))  # tokens into the window
    return -factor * excess / buffer


def informative_groups(scores: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
    """DAPO's dynamic-sampling filter (Yu et al. 2025, eq. 11): ``[B]`` True where a prompt's
    K rewards are not all equal.

    ``0 < |{o_i : is_equivalent(a, o_i)}| < G``: a group whose K samples all got the same
    reward has advantage 0 under any group baseline, so it adds no gradient, only noise
    in the token count. ``scores``: ``[B, K]``.
    """
    spread = scores.max(dim=1).values - scores.min(dim=1).values  # (B,)
    return spread > atol


# ---------------------------------------------------------------- surrogates


def truncated_importance_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                                 cap: float = 2.0) -> torch.Tensor:
    """Truncated importance sampling of the rollout/training mismatch, ``[N, T]``, no gradient.

    Yao et al. (2025, "Your efficient RL framework secretly brings you off-policy RL
    training"): when another engine (vLLM) samples with ``pi_rollout`` while the trainer
    computes ``pi_old``, the per-token loss is weighted by
    ``w_t = min(pi_old(y_t) / pi_rollout(y_t), C)``. 0 at masked positions. (TRL's
    ``vllm_importance_sampling_mode="token_truncate"``.)
    """
    log_w = torch.where(mask, old_logprobs - rollout_logprobs, 0.0)
    return torch.where(mask, log_w.exp().clamp(max=cap), 0.0).detach()


def truncated_sequence_importance_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor,
                                          mask: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """Truncated importance sampling for a sequence-level loss (GSPO, RLOO), ``[N]``, no gradient.

    The action of a sequence-level loss is the whole response, so its correction is the
    response's importance ratio ``w_i = min(pi_old(y_i|x) / pi_rollout(y_i|x), C) =
    min(exp(sum_t (log pi_old - log pi_rollout)_t), C)`` (TRL's
    ``vllm_importance_sampling_mode="sequence_truncate"``), which multiplies the sequence's loss.
    """
    log_w = masked_sum(old_logprobs - rollout_logprobs, mask, dim=1)  # (N,) log pi_old(y|x) - log pi_rollout(y|x)
    return log_w.exp().clamp(max=cap).detach()


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token clipped surrogate with decoupled clip ranges (DAPO, Yu et al. 2025, eq. 10), ``[N, T]``.

    ``l_t = -min(r_t A_t, clip(r_t, 1 - clip_low, 1 + clip_high) A_t)``, ``r_t = pi / pi_old``;
    ``clip_low = clip_high`` is PPO's (Schulman et al. 2017, eq. 7). ``weights`` (e.g.
    :func:`truncated_importance_weights`) multiply each token's loss. 0 at masked positions.
    """
    log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)  # (N, T)
    per_token, metrics = clipped_terms(log_ratio.exp(), log_ratio, advantages, mask, clip_low, clip_high)
    if weights is not None:
        per_token = per_token * weights
    return torch.where(mask, per_token, 0.0), metrics


def gspo_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025, eqs. 5-7): one length-normalised ratio per sequence, ``[N]``.

    ``s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(mean_t log(pi / pi_old)_t)`` and
    ``l_i = -min(s_i A_i, clip(s_i, 1 - clip_low, 1 + clip_high) A_i)`` with ``A_i`` the
    sequence's advantage (read at its first token of ``advantages [N, T]``). The paper's
    ranges are 3e-4 and 4e-4 (the ratio is a per-token geometric mean, close to 1).
    ``weights [N]`` (:func:`truncated_sequence_importance_weights`) multiply each ``l_i``.
    """
    log_s = masked_mean(logprobs - old_logprobs, mask, dim=1)  # (N,) mean_t log r_t
    s = log_s.exp()
    adv = advantages[:, 0]  # (N,) one advantage per sequence
    unclipped = s * adv
    clipped = s.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    with torch.no_grad():
        metrics = {
            "clipfrac": (clipped < unclipped).float().mean(),
            "clipfrac_low": ((s < 1.0 - clip_low) & (adv < 0)).float().mean(),
            "clipfrac_high": ((s > 1.0 + clip_high) & (adv > 0)).float().mean(),
            "approx_kl": ((s - 1) - log_s).mean(),
            "ratio_mean": s.mean(),
        }
    loss = -torch.minimum(unclipped, clipped)  # (N,)
    return (loss if weights is None else loss * weights), metrics


# ---------------------------------------------------------------- reductions to per-sequence values


def sequence_token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO (Shao et al. 2024, eq. 3): ``1/|y_i| sum_t l_t``; averaged over sequences by the caller."""
    return masked_mean(per_token, mask, dim=1)


def sequence_token_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DAPO (Yu et al. 2025, eq. 12): ``sum_t l_t``; the caller divides by ``sum_i |y_i|``, every token weighs the same."""
    return masked_sum(per_token, mask, dim=1)


def constant_length_sum(per_token: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025, eq. 3): ``sum_t l_t / L_max`` with a constant ``L_max`` (the
    generation budget): no length normalisation, so long wrong answers are not favoured."""
    return masked_sum(per_token, mask, dim=1) / float(max_length)
