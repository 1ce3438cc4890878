"""The pure math of on-policy RL from feedback: PPO, RLOO and GRPO.

Per-token functions take right-padded ``[N, T]`` tensors (N sampled responses, T
response positions) and a bool ``mask [N, T]`` that is True on valid response
tokens. Every masked position is replaced by 0 *before* any arithmetic, so padding
(even NaN or inf) never changes a value or a gradient. Losses return per-sequence
values ``[N]``; :func:`alignkit.losses.reduce.global_mean` makes the training scalar.
Group functions (RLOO, GRPO) take ``[B, K]`` scores: B prompts with K samples each.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------- masked reductions


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over True entries of ``mask`` (all of them, or along ``dim``)."""
    x = torch.where(mask, x, 0.0)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over True entries of ``mask``; an empty selection gives 0, not NaN."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid entries of ``x`` (all of them, a scalar).

    ``unbiased`` divides by ``n - 1`` (Bessel); with a single valid entry that is
    undefined and the biased value (0) is returned instead.
    """
    n = mask.sum()
    if n == 0:
        raise ValueError("masked_var: the mask selects no entries")
    centered = torch.where(mask, x - masked_mean(x, mask), 0.0)
    var = centered.pow(2).sum() / n
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / std`` over the valid entries of the whole batch; 0 at masked positions.

    ``shift_mean=False`` keeps the original mean and only rescales, ``x' = (x - mean)/std + mean``
    (the convention of TRL's ``masked_whiten``, used to whiten rewards without re-centering them).
    The variance is unbiased; a 1e-8 floor keeps constant inputs finite.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


# ---------------------------------------------------------------- rewards


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens, ``[N, T]``, 0 at masked.

    With ``log r = logp_ref - logp`` (tokens are sampled from pi), following Schulman,
    "Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html):

    - ``"k1"``: ``logp - logp_ref``, unbiased, high variance, can be negative (InstructGPT).
    - ``"k3"``: ``(r - 1) - log r``, unbiased and always >= 0.
    - ``"mse"``: ``0.5 * (logp - logp_ref)^2`` (Schulman's k2), biased, low variance, >= 0.
    - ``"abs"``: ``|logp - logp_ref|``.
    """
    log_ratio = torch.where(mask, logprobs - ref_logprobs, 0.0)  # log pi - log pi_ref, (N, T)
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # (r - 1) - log r, r = exp(-log_ratio)
    if kind == "mse":
        return 0.5 * log_ratio.pow(2)
    if kind == "abs":
        return log_ratio.abs()
    raise ValueError(f"unknown kl_penalty kind {kind!r}; choose k1, k3, mse or abs")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` index of the last valid token of each right-padded row (every row needs one)."""
    lengths = mask.sum(1)
    if (lengths == 0).any():
        raise ValueError("every response needs at least one valid token")
    return lengths - 1


def shape_rewards(
    scores: torch.Tensor | None,
    kl: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    *,
    dense: list[list[tuple[int, float]]] | None = None,
) -> torch.Tensor:
    """Per-token rewards ``[N, T]``: a KL penalty at every token plus the task reward.

    InstructGPT (Ouyang et al. 2022, eq. 2) / Ziegler et al. (2019, sec. 2.2): the
    sequence reward ``R(x, y) = r(x, y) - beta * KL`` is spread as ``r_t = -beta * kl_t``
    at every valid token, with the score ``r(x, y)`` added at the last valid token.

    Fine-Grained RLHF (Wu et al. 2023, eq. 1): ``r_t = sum_k w_k r_k(segment ending at t)
    - beta * kl_t``. ``dense[i]`` lists ``(token_index, value)`` segment-end rewards of row
    ``i``; each value is added at ``token_index`` (clamped into ``[0, last valid token]``;
    repeated indices add up). The weights ``w_k`` are applied by the caller, who passes
    each segment's already-weighted sum. ``dense`` works with ``scores`` (both are added)
    or instead of it (``scores=None``).

    Args:
        scores: ``[N]`` sequence scores, or ``None``.
        kl: ``[N, T]`` per-token KL estimate (see :func:`kl_penalty`).
        mask: ``[N, T]`` bool, right-padded.
        beta: KL coefficient.
        dense: optional list of N lists of ``(token_index, value)``.
    """
    rewards = torch.where(mask, -beta * kl, 0.0)  # (N, T)
    last = last_token_index(mask)  # (N,)
    rows = torch.arange(kl.shape[0], device=kl.device)
    if scores is not None:
        rewards[rows, last] += scores.to(rewards.dtype)
    if dense is not None:
        if len(dense) != kl.shape[0]:
            raise ValueError(f"dense has {len(dense)} rows, expected {kl.shape[0]}")
        for i, segments in enumerate(dense):
            for t, value in segments:
                rewards[i, min(max(int(t), 0), int(last[i]))] += value
    return rewards


def clip_rewards(scores: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Clamp scores into ``[-clip, clip]``; ``clip=None`` returns them unchanged."""
    return scores if clip is None else scores.clamp(-clip, clip)


# ---------------------------------------------------------------- advantages


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16), no gradient.

    The value after the last valid token is 0 (the episode ends there); masked
    positions get advantage and return 0. Returns ``(advantages, returns)``, both
    ``[N, T]``, with ``returns = advantages + values`` the value-function targets.
    """
    mask_f = mask.to(values.dtype)
    rewards = torch.where(mask, rewards, 0.0)
    values = torch.where(mask, values, 0.0)
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(values[:, 0])  # A_{t+1}, (N,)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)  # V_{t+1}, 0 past the end
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # delta_t = r_t + gamma V_{t+1} - V_t
        last_gae = (delta + gamma * lam * last_gae) * mask_f[:, t]  # A_t = delta_t + gamma lam A_{t+1}
        advantages[:, t] = last_gae
    return advantages, advantages + values


def _group_stats(scores: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Valid mask, count ``[B, 1]`` and sum ``[B, 1]`` of each group of ``[B, K]`` scores."""
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
    scores = torch.where(mask, scores, 0.0)
    count = mask.sum(1, keepdim=True)
    return scores, mask, count, scores.sum(1, keepdim=True)


def rloo_advantages(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE Leave-One-Out advantages ``[B, K]`` (Ahmadian et al. 2024, eq. 6).

    ``A_i = r_i - 1/(k-1) * sum_{j != i} r_j`` over the ``k`` valid samples of a prompt
    (equivalently ``k/(k-1) * (r_i - mean)``). Groups with one valid sample and masked
    entries get 0.
    """
    scores, mask, count, total = _group_stats(scores, mask)
    baseline = (total - scores) / (count - 1).clamp(min=1)  # mean of the others, (B, K)
    return torch.where(mask & (count > 1), scores - baseline, 0.0)


def grpo_advantages(
    scores: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-4, scale: bool = True
) -> torch.Tensor:
    """Group-relative advantages ``[B, K]`` (Shao et al. 2024, DeepSeekMath, sec. 4.1.2).

    ``A_i = (r_i - mean(r)) / (std(r) + eps)`` over the valid samples of each prompt,
    with the unbiased std (as TRL's GRPOTrainer). ``scale=False`` drops the division,
    ``A_i = r_i - mean(r)`` (Dr. GRPO, Liu et al. 2025). A group with a single valid
    sample has std 0 and advantage 0; masked entries get 0.
    """
    scores, mask, count, total = _group_stats(scores, mask)
    centered = torch.where(mask, scores - total / count.clamp(min=1), 0.0)  # r - mean, (B, K)
    if not scale:
        return centered
    var = centered.pow(2).sum(1, keepdim=True) / (count - 1).clamp(min=1)  # unbiased, (B, 1)
    return centered / (var.sqrt() + eps)


# ---------------------------------------------------------------- PPO losses


def clipped_terms(
    ratio: torch.Tensor, log_ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_low: float, clip_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate elementwise, ``-min(A r, A clip(r, 1 - clip_low, 1 + clip_high))``
    (Schulman et al. 2017, eq. 7, with DAPO's decoupled upper clip), and its metrics over ``mask``:
    ``clipfrac`` (the clipped term is the smaller: its gradient is 0), ``approx_kl`` (KL(pi_old || pi)
    by the k3 estimator ``(r - 1) - log r``, as CleanRL), ``ratio_mean``, and ``clipfrac`` split as TRL's
    GRPOTrainer splits it: ``clipfrac_low`` (``r < 1 - clip_low`` where ``A < 0``) and ``clipfrac_high``
    (``r > 1 + clip_high`` where ``A > 0``), ``clipfrac = clipfrac_low + clipfrac_high``. One place for
    every surrogate: per token (PPO, DAPO) and per macro action (MA-RLHF)."""
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    with torch.no_grad():
        metrics = {
            "clipfrac": masked_mean((clipped < unclipped).float(), mask),
            "clipfrac_low": masked_mean(((ratio < 1.0 - clip_low) & (advantages < 0)).float(), mask),
            "clipfrac_high": masked_mean(((ratio > 1.0 + clip_high) & (advantages > 0)).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return -torch.minimum(unclipped, clipped), metrics


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), per sequence ``[N]``.

    Per token, ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))`` with
    ``ratio = pi / pi_old``; each sequence's loss is the mean over its valid tokens.

    Metrics (detached scalars over all valid tokens): ``clipfrac``, the fraction of
    tokens where the clipped term is the larger (its gradient is 0); ``approx_kl``,
    KL(pi_old || pi) by Schulman's unbiased k3 estimator ``(ratio - 1) - log ratio``
    (as CleanRL); ``ratio_mean``.
    """
    log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)  # (N, T)
    per_token, metrics = clipped_terms(log_ratio.exp(), log_ratio, advantages, mask, clip_eps, clip_eps)
    return masked_mean(per_token, mask, dim=1), metrics  # (N,)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (as OpenAI baselines' PPO2), per sequence ``[N]``.

    Per token ``0.5 * max((V - R)^2, (V_clip - R)^2)`` with
    ``V_clip = V_old + clip(V - V_old, -eps, eps)``; mean over each row's valid tokens.
    Metric ``vf_clipfrac``: fraction of valid tokens where the clipped term is larger.
    """
    values = torch.where(mask, values, 0.0)
    old_values = torch.where(mask, old_values, 0.0)
    returns = torch.where(mask, returns, 0.0)
    v_clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    vf_loss1 = (values - returns).pow(2)
    vf_loss2 = (v_clipped - returns).pow(2)
    loss = masked_mean(0.5 * torch.maximum(vf_loss1, vf_loss2), mask, dim=1)  # (N,)
    with torch.no_grad():
        metrics = {"vf_clipfrac": masked_mean((vf_loss2 > vf_loss1).float(), mask)}
    return loss, metrics


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean token entropy ``[N]``; the caller subtracts ``coef * bonus``."""
    return masked_mean(entropy, mask, dim=1)


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var[R - V] / Var[R]`` over valid tokens: 1 is perfect, 0 no better than a constant.

    NaN when the returns are constant (as CleanRL).
    """
    var_r = masked_var(returns, mask, unbiased=False)
    if var_r == 0:
        return torch.tensor(float("nan"))
    return 1 - masked_var(returns - values, mask, unbiased=False) / var_r


# ---------------------------------------------------------------- KL coefficient


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, sec. 2.2).

    ``e_t = clip(KL_t / target - 1, -0.2, 0.2)``;  ``beta <- beta * (1 + e_t * n_steps / horizon)``,
    where ``n_steps`` counts the samples (episodes) since the last update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)  # e_t
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value, self.target, self.horizon = state["value"], state["target"], state["horizon"]


class FixedKLController:
    """Constant KL coefficient; ``update`` changes nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
