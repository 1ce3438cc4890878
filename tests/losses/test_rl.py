"""PPO / RLOO / GRPO math against values worked out by hand."""

import math

import pytest
import torch

from alignkit.losses.rl import (
    AdaptiveKLController,
    FixedKLController,
    clip_rewards,
    entropy_bonus,
    explained_variance,
    gae,
    grpo_advantages,
    kl_penalty,
    masked_mean,
    masked_sum,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    shape_rewards,
    whiten,
)

NAN = float("nan")


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def m(*rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------- masked reductions


def test_masked_reductions_by_hand():
    """x = [[1, 2, nan], [3, nan, nan]] with the nan entries masked.

    sum = 1 + 2 + 3 = 6; mean = 6 / 3 = 2; row means = [1.5, 3]
    var: deviations [-1, 0, 1] -> squares sum 2; unbiased 2 / 2 = 1, biased 2 / 3.
    """
    x, mask = t([1.0, 2.0, NAN], [3.0, NAN, NAN]), m([1, 1, 0], [1, 0, 0])
    assert masked_sum(x, mask).item() == 6.0
    assert masked_mean(x, mask).item() == 2.0
    torch.testing.assert_close(masked_mean(x, mask, dim=1), t(1.5, 3.0))
    assert masked_var(x, mask).item() == pytest.approx(1.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)


def test_masked_mean_of_an_empty_row_is_zero():
    assert masked_mean(t([5.0, 6.0]), m([0, 0]), dim=1).tolist() == [0.0]


def test_whiten_by_hand():
    """x = [1, 2, 3, 6]: mean 3, unbiased var (4 + 1 + 0 + 9) / 3 = 14/3."""
    x, mask = t([1.0, 2.0, 3.0, 6.0, 100.0]), m([1, 1, 1, 1, 0])
    std = math.sqrt(14 / 3)
    expected = [-2 / std, -1 / std, 0.0, 3 / std, 0.0]
    torch.testing.assert_close(whiten(x, mask), t(expected), atol=1e-6, rtol=1e-6)
    # shift_mean=False adds the mean 3 back on valid tokens
    expected_kept = [e + 3 for e in expected[:4]] + [0.0]
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), t(expected_kept), atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- rewards


def test_kl_penalty_by_hand():
    """logp = [-1, -2], ref = [-1.5, -1].

    k1 = logp - ref = [0.5, -1.0]
    k3 with log r = ref - logp = [-0.5, 1.0]:
      (e^-0.5 - 1) + 0.5 = 0.606531 - 1 + 0.5 = 0.106531
      (e^1 - 1) - 1      = 2.718282 - 2       = 0.718282
    mse = 0.5 * [0.25, 1.0] = [0.125, 0.5]; abs = [0.5, 1.0].
    """
    logp, ref, mask = t([-1.0, -2.0, NAN]), t([-1.5, -1.0, 0.0]), m([1, 1, 0])
    torch.testing.assert_close(kl_penalty(logp, ref, mask, "k1"), t([0.5, -1.0, 0.0]))
    torch.testing.assert_close(kl_penalty(logp, ref, mask, "k3"), t([0.106531, 0.718282, 0.0]))
    torch.testing.assert_close(kl_penalty(logp, ref, mask, "mse"), t([0.125, 0.5, 0.0]))
    torch.testing.assert_close(kl_penalty(logp, ref, mask, "abs"), t([0.5, 1.0, 0.0]))
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, mask, "k7")


def test_k3_is_nonnegative_and_zero_at_equality():
    logp = torch.randn(4, 6)
    k3 = kl_penalty(logp, torch.randn(4, 6), torch.ones(4, 6, dtype=torch.bool), "k3")
    assert (k3 >= 0).all()
    assert kl_penalty(logp, logp, torch.ones(4, 6, dtype=torch.bool), "k3").abs().max() == 0


def test_shape_rewards_by_hand():
    """beta = 0.5; row 0 has 3 valid tokens, row 1 has 2.

    row 0: -0.5 * [0.1, 0.2, -0.1] = [-0.05, -0.1, 0.05], + score 1.0 at t=2 -> 1.05
    row 1: -0.5 * [0.3, 0.0]       = [-0.15, 0.0],         + score -2.0 at t=1 -> -2.0
    Padding (kl 5 and 7) stays 0.
    """
    kl = t([0.1, 0.2, -0.1, 5.0], [0.3, 0.0, 7.0, 7.0])
    mask = m([1, 1, 1, 0], [1, 1, 0, 0])
    rewards = shape_rewards(t(1.0, -2.0), kl, mask, beta=0.5)
    torch.testing.assert_close(rewards, t([-0.05, -0.1, 1.05, 0.0], [-0.15, -2.0, 0.0, 0.0]))


def test_shape_rewards_dense_segments():
    """Segment rewards (0.5 at t=0, 0.25 at t=10 clamped to the last valid t=2) on row 0.

    with scores:    row 0 = [-0.05 + 0.5, -0.1, 0.05 + 1.0 + 0.25] = [0.45, -0.1, 1.3]
    without scores: row 0 = [0.45, -0.1, 0.05 + 0.25 = 0.3], row 1 = KL only.
    """
    kl = t([0.1, 0.2, -0.1, 5.0], [0.3, 0.0, 7.0, 7.0])
    mask = m([1, 1, 1, 0], [1, 1, 0, 0])
    dense = [[(0, 0.5), (10, 0.25)], []]
    both = shape_rewards(t(1.0, -2.0), kl, mask, 0.5, dense=dense)
    torch.testing.assert_close(both, t([0.45, -0.1, 1.3, 0.0], [-0.15, -2.0, 0.0, 0.0]))
    only = shape_rewards(None, kl, mask, 0.5, dense=dense)
    torch.testing.assert_close(only, t([0.45, -0.1, 0.3, 0.0], [-0.15, 0.0, 0.0, 0.0]))


def test_clip_rewards():
    assert clip_rewards(t(-9.0, 0.5, 9.0), 2.0).tolist() == [-2.0, 0.5, 2.0]
    assert clip_rewards(t(-9.0, 9.0), None).tolist() == [-9.0, 9.0]


# ---------------------------------------------------------------- GAE


def test_gae_three_tokens_by_hand():
    """gamma = 1, lam = 0.5, r = [0, 0, 1], V = [0.5, 0.4, 0.8], V after the end = 0.

    t=2: delta = 1 + 0   - 0.8 = 0.2   A = 0.2
    t=1: delta = 0 + 0.8 - 0.4 = 0.4   A = 0.4  + 0.5 * 0.2 = 0.5
    t=0: delta = 0 + 0.4 - 0.5 = -0.1  A = -0.1 + 0.5 * 0.5 = 0.15
    returns = A + V = [0.65, 0.9, 1.0]. Row 1 is the same response with a padding
    token full of garbage: it must give the same numbers and 0 at the padding.
    """
    rewards = t([0.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    values = t([0.5, 0.4, 0.8], [0.5, 0.4, 0.8])
    rewards = torch.cat([rewards, t([9.0], [NAN])], dim=1)
    values = torch.cat([values, t([9.0], [NAN])], dim=1)
    mask = m([1, 1, 1, 0], [1, 1, 1, 0])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, t([0.15, 0.5, 0.2, 0.0], [0.15, 0.5, 0.2, 0.0]))
    torch.testing.assert_close(ret, t([0.65, 0.9, 1.0, 0.0], [0.65, 0.9, 1.0, 0.0]))


def test_gae_limits():
    """lam = 1, gamma = 1: A_t = (sum of rewards from t) - V_t (Monte Carlo).
    lam = 0: A_t = delta_t = r_t + gamma V_{t+1} - V_t (one-step TD)."""
    r, v, mask = t([1.0, 2.0, 3.0]), t([0.5, 1.0, 1.5]), m([1, 1, 1])
    adv, _ = gae(r, v, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, t([6 - 0.5, 5 - 1.0, 3 - 1.5]))
    adv, _ = gae(r, v, mask, gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, t([1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 1.5 - 1.0, 3 - 1.5]))


def naive_gae(rewards, values, length, gamma, lam):
    """The explicit sum A_t = sum_l (gamma lam)^l delta_{t+l} (Schulman et al. 2016, eq. 16)."""
    v = values[:length] + [0.0]
    deltas = [rewards[s] + gamma * v[s + 1] - v[s] for s in range(length)]
    return [sum((gamma * lam) ** k * deltas[s + k] for k in range(length - s)) for s in range(length)]


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_naive_sum(seed):
    g = torch.Generator().manual_seed(seed)
    N, T, gamma, lam = 5, 7, 0.97, 0.9
    rewards, values = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for i in range(N):
        L = int(lengths[i])
        expected = naive_gae(rewards[i].tolist(), values[i].tolist(), L, gamma, lam)
        torch.testing.assert_close(adv[i, :L], torch.tensor(expected), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ret[i, :L], adv[i, :L] + values[i, :L])
        assert (adv[i, L:] == 0).all() and (ret[i, L:] == 0).all()


# ---------------------------------------------------------------- PPO losses


def policy_case():
    """Four tokens with ratios on both sides of the clip [0.8, 1.2], plus a NaN padding token."""
    ratios = [1.5, 0.5, 1.5, 0.5]
    logprobs = torch.tensor([[math.log(r) for r in ratios] + [NAN]], requires_grad=True)
    old = t([0.0, 0.0, 0.0, 0.0, NAN])
    adv = t([1.0, 1.0, -1.0, -1.0, NAN])
    mask = m([1, 1, 1, 1, 0])
    return logprobs, old, adv, mask


def test_ppo_policy_loss_by_hand():
    """clip_eps = 0.2, per token max(-A r, -A clip(r)):

    A=+1, r=1.5: max(-1.5, -1.2) = -1.2  clipped
    A=+1, r=0.5: max(-0.5, -0.8) = -0.5  not clipped (pessimistic bound keeps r)
    A=-1, r=1.5: max( 1.5,  1.2) =  1.5  not clipped
    A=-1, r=0.5: max( 0.5,  0.8) =  0.8  clipped
    loss = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.6 / 4 = 0.15; clipfrac = 2/4
    approx_kl = mean((r - 1) - log r): r=1.5 -> 0.5 - 0.405465 = 0.094535,
      r=0.5 -> -0.5 + 0.693147 = 0.193147; mean = (0.094535 + 0.193147) / 2 = 0.143841
    ratio_mean = (1.5 + 0.5 + 1.5 + 0.5) / 4 = 1.0
    """
    logprobs, old, adv, mask = policy_case()
    loss, metrics = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert metrics["clipfrac"].item() == pytest.approx(0.5)
    assert metrics["approx_kl"].item() == pytest.approx(0.143841, abs=1e-5)
    assert metrics["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6)


def test_ppo_policy_gradient_by_hand():
    """d loss / d logp_t = -A_t r_t / 4 where unclipped, 0 where clipped or padded:

    t=0 clipped 0; t=1: -(1)(0.5)/4 = -0.125; t=2: -(-1)(1.5)/4 = 0.375; t=3 clipped 0; pad 0.
    """
    logprobs, old, adv, mask = policy_case()
    loss, _ = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    loss.sum().backward()
    torch.testing.assert_close(logprobs.grad, t([0.0, -0.125, 0.375, 0.0, 0.0]))


def test_ppo_policy_loss_is_per_sequence():
    """Each row is the mean over its own valid tokens: a second row leaves the first unchanged."""
    logprobs, old, adv, mask = policy_case()
    extra = lambda x, v: torch.cat([x.detach(), torch.full_like(x.detach(), v)])  # noqa: E731
    loss, _ = ppo_policy_loss(extra(logprobs, 0.1), extra(old, 0.0), extra(adv, 2.0), torch.cat([mask, mask]))
    assert loss.shape == (2,)
    assert loss[0].item() == pytest.approx(0.15, abs=1e-6)
    # row 1: r = e^0.1 = 1.105171 inside the clip, A = 2: -2 * 1.105171 = -2.210342
    assert loss[1].item() == pytest.approx(-2.210342, abs=1e-5)


def test_ppo_value_loss_by_hand():
    """clip_eps = 0.2, V_old = 0, so V_clip = clip(V, -0.2, 0.2):

    V=0.5, R=1: V_clip=0.2, (0.5-1)^2 = 0.25, (0.2-1)^2 = 0.64 -> 0.5 * 0.64 = 0.32  clipped
    V=0.5, R=0: V_clip=0.2, (0.5)^2   = 0.25, (0.2)^2   = 0.04 -> 0.5 * 0.25 = 0.125
    V=0.1, R=1: V_clip=0.1, 0.81 both                          -> 0.5 * 0.81 = 0.405
    loss = (0.32 + 0.125 + 0.405) / 3 = 0.85 / 3 = 0.283333; vf_clipfrac = 1/3
    """
    values = torch.tensor([[0.5, 0.5, 0.1, NAN]], requires_grad=True)
    old, ret, mask = t([0.0, 0.0, 0.0, NAN]), t([1.0, 0.0, 1.0, NAN]), m([1, 1, 1, 0])
    loss, metrics = ppo_value_loss(values, old, ret, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.85 / 3, abs=1e-6)
    assert metrics["vf_clipfrac"].item() == pytest.approx(1 / 3)
    loss.sum().backward()
    # grads (V - R)/3 where unclipped: t=0 clipped -> 0; t=1: 0.5/3; t=2: -0.9/3; pad 0
    torch.testing.assert_close(values.grad, t([0.0, 0.5 / 3, -0.9 / 3, 0.0]))


def test_entropy_bonus_and_explained_variance():
    """entropy rows [1, 3 | pad] -> 2 and [4 | pad, pad] -> 4.
    EV with R = [1, 2, 3], V = [1.5, 2, 2.5]: R - V = [-0.5, 0, 0.5],
    Var[R - V] / Var[R] = (0.5/3) / (2/3) = 0.25 -> 0.75."""
    ent, mask = t([1.0, 3.0, NAN], [4.0, NAN, NAN]), m([1, 1, 0], [1, 0, 0])
    torch.testing.assert_close(entropy_bonus(ent, mask), t(2.0, 4.0))
    ret, vals, mask = t([1.0, 2.0, 3.0, NAN]), t([1.5, 2.0, 2.5, NAN]), m([1, 1, 1, 0])
    assert explained_variance(vals, ret, mask).item() == pytest.approx(0.75)
    assert explained_variance(ret, ret, mask).item() == pytest.approx(1.0)
    assert math.isnan(explained_variance(vals, t([2.0, 2.0, 2.0, 0.0]), mask).item())


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_two_updates_by_hand():
    """init 0.1, target 6, horizon 10000.

    KL = 9,   n = 1000: e = clip(9/6 - 1 = 0.5, +-0.2) = 0.2;  beta = 0.1 * (1 + 0.2 * 0.1) = 0.102
    KL = 5.4, n = 2000: e = 5.4/6 - 1 = -0.1;  beta = 0.102 * (1 - 0.1 * 0.2) = 0.102 * 0.98 = 0.09996
    """
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(9.0, 1000) == pytest.approx(0.102)
    assert ctl.update(5.4, 2000) == pytest.approx(0.09996)
    restored = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value and restored.update(3.0, 500) == ctl.update(3.0, 500)


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 1000) == 0.05 and ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


# ---------------------------------------------------------------- group advantages


def test_rloo_by_hand():
    """row 0 = [1, 2, 3, 6], all valid, baseline = mean of the other three:
      1 - (2+3+6)/3 = -8/3;  2 - (1+3+6)/3 = -4/3;  3 - (1+2+6)/3 = 0;  6 - (1+2+3)/3 = 4
    row 1 = [5, 1 | pad, pad]: [5 - 1, 1 - 5] = [4, -4]
    row 2 = [7 | pad x3]: a single sample has no baseline -> 0
    """
    scores = t([1.0, 2.0, 3.0, 6.0], [5.0, 1.0, NAN, 99.0], [7.0, NAN, NAN, NAN])
    mask = m([1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0])
    expected = t([-8 / 3, -4 / 3, 0.0, 4.0], [4.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(rloo_advantages(scores, mask), expected)


def test_rloo_is_scaled_centering():
    """Identity: r_i - mean_{j != i} r_j = k/(k-1) * (r_i - mean_j r_j)."""
    scores = torch.randn(3, 5)
    expected = 5 / 4 * (scores - scores.mean(1, keepdim=True))
    torch.testing.assert_close(rloo_advantages(scores), expected)


def test_grpo_by_hand():
    """row 0 = [1, 2, 3, 6]: mean 3, unbiased std sqrt((4 + 1 + 0 + 9)/3) = sqrt(14/3) = 2.160247,
      A = [-2, -1, 0, 3] / (2.160247 + 1e-4)
    row 1 = [5, 1 | pad]: mean 3, std sqrt((4 + 4)/1) = 2.828427 -> +-2 / (2.828427 + 1e-4)
    row 2 = [4, 4, 4]: std 0 -> (4 - 4) / (0 + eps) = 0
    """
    scores = t([1.0, 2.0, 3.0, 6.0], [5.0, 1.0, NAN, NAN], [4.0, 4.0, 4.0, NAN])
    mask = m([1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0])
    s0, s1 = math.sqrt(14 / 3) + 1e-4, math.sqrt(8.0) + 1e-4
    expected = t([-2 / s0, -1 / s0, 0.0, 3 / s0], [2 / s1, -2 / s1, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(grpo_advantages(scores, mask), expected)
    unscaled = t([-2.0, -1.0, 0.0, 3.0], [2.0, -2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(grpo_advantages(scores, mask, scale=False), unscaled)


def test_group_advantages_single_sample_and_full_mask():
    scores = t([3.0, 9.0])
    assert grpo_advantages(scores, m([1, 0])).tolist() == [[0.0, 0.0]]
    assert grpo_advantages(scores, m([0, 0])).tolist() == [[0.0, 0.0]]
    assert rloo_advantages(scores, m([0, 0])).tolist() == [[0.0, 0.0]]
