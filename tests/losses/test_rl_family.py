"""REINFORCE++, Dr. GRPO, DAPO, GSPO and truncated IS: hand-worked values, then the peers.

The peer checks run TRL 1.16's own ``GRPOTrainer._compute_loss``
(``trl/trainer/grpo_trainer.py``, lines 3020-3170 in 1.16: ratio, clipping, the
``loss_type`` reductions, the vLLM importance-sampling weight) on the same tensors, with
the model forward replaced by the log-probs under test; and OpenRLHF's REINFORCE++
recipe (``openrlhf/trainer/ppo_utils/experience_maker.py``,
``compute_advantages_and_returns`` and ``get_cumulative_returns``) written out as a loop.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignkit.losses.rl import grpo_advantages, kl_penalty, shape_rewards
from alignkit.losses.rl_family import (
    clipped_surrogate,
    constant_length_sum,
    discounted_returns,
    gspo_surrogate,
    informative_groups,
    normalization_moments,
    normalize_advantages,
    overlong_penalty,
    sequence_token_mean,
    sequence_token_sum,
    truncated_importance_weights,
    truncated_sequence_importance_weights,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def m(*rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------- REINFORCE++


def test_discounted_returns_by_hand():
    """r = [1, 2, 3 | pad], gamma 0.5: G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75."""
    r = discounted_returns(t([1.0, 2.0, 3.0, float("nan")]), m([1, 1, 1, 0]), gamma=0.5)
    assert r.tolist() == [[2.75, 3.5, 3.0, 0.0]]


def test_normalize_advantages_by_hand():
    """x = [1, 2, 3, 6]: mean 3, biased var (4 + 1 + 0 + 9) / 4 = 3.5 (OpenRLHF divides by the count)."""
    x, mask = t([1.0, 2.0, 3.0, 6.0, 99.0]), m([1, 1, 1, 1, 0])
    s = math.sqrt(3.5)
    torch.testing.assert_close(normalize_advantages(x, mask), t([-2 / s, -1 / s, 0.0, 3 / s, 0.0]))


def test_normalize_advantages_over_shards_equals_the_whole_batch():
    """Moments summed over two "processes" give the normalisation of the concatenated batch."""
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    whole = normalize_advantages(x, mask)
    moments = normalization_moments(x[:2], mask[:2]) + normalization_moments(x[2:], mask[2:])
    torch.testing.assert_close(torch.cat([normalize_advantages(x[:2], mask[:2], moments),
                                          normalize_advantages(x[2:], mask[2:], moments)]), whole)


def openrlhf_reinforce_pp(scores, kl, mask, beta, baseline):
    """OpenRLHF's REINFORCE++(-baseline) as a loop: (group-mean baseline), compute_reward,
    get_cumulative_returns (gamma 1), then global mean / rsqrt(clamp(var, 1e-8))."""
    if baseline:
        scores = scores - scores.mean(-1, keepdim=True)
    scores = scores.reshape(-1)
    N, T = kl.shape
    reward = [[-beta * float(kl[i, j]) if mask[i, j] else 0.0 for j in range(T)] for i in range(N)]
    for i in range(N):
        reward[i][int(mask[i].sum()) - 1] += float(scores[i])
    returns = [[sum(reward[i][j:]) for j in range(T)] for i in range(N)]
    valid = [returns[i][j] for i in range(N) for j in range(T) if mask[i, j]]
    mean = sum(valid) / len(valid)
    var = sum((v - mean) ** 2 for v in valid) / len(valid)
    return [[(returns[i][j] - mean) / math.sqrt(max(var, 1e-8)) if mask[i, j] else 0.0 for j in range(T)]
            for i in range(N)]


@pytest.mark.parametrize("baseline", [False, True], ids=["reinforce_pp", "reinforce_pp_baseline"])
def test_reinforce_pp_matches_openrlhf(baseline):
    """scores [1, 0] (one prompt, K = 2), k1 KL [[0.1, 0.2], [0.3, pad]], beta 0.5.

    By hand without baseline: rewards [[-0.05, -0.1 + 1], [-0.15 + 0]]; returns [[0.85, 0.9], [-0.15]].
    With the baseline the scores are [0.5, -0.5]: returns [[0.35, 0.4], [-0.65]].
    """
    scores, mask = t([1.0, 0.0]), m([1, 1], [1, 0])
    logp, ref = t([-1.0, -1.0], [-1.0, -9.0]), t([-1.1, -1.2], [-1.3, 0.0])
    kl = kl_penalty(logp, ref, mask)
    centered = grpo_advantages(scores, scale=False) if baseline else scores  # (B, K)
    rewards = shape_rewards(centered.view(-1), kl, mask, beta=0.5)
    returns = discounted_returns(rewards, mask)
    expected = t([0.35, 0.4], [-0.65, 0.0]) if baseline else t([0.85, 0.9], [-0.15, 0.0])
    torch.testing.assert_close(returns, expected)
    ours = normalize_advantages(returns, mask)
    torch.testing.assert_close(ours, t(*openrlhf_reinforce_pp(scores, kl, mask, 0.5, baseline)))


# ---------------------------------------------------------------- DAPO pieces


def test_overlong_penalty_by_hand():
    """L_max 10, L_cache 4: no penalty up to 6 tokens, then -(|y| - 6) / 4, capped at -1."""
    got = overlong_penalty(torch.tensor([5, 6, 8, 10, 12]), max_length=10, buffer=4)
    assert got.tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert overlong_penalty(torch.tensor([8]), 10, 4, factor=2.0).tolist() == [-1.0]
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(torch.tensor([1]), 10, 0)


def test_informative_groups():
    assert informative_groups(t([1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2000001])).tolist() == [False, True, True]
    assert informative_groups(t([0.2, 0.2, 0.2000001]), atol=1e-3).tolist() == [False]


def test_clipped_surrogate_decoupled_clip_by_hand():
    """ratios [1.5, 0.5, 0.5, 1.5], A [1, -1, 1, -1], clip_low 0.2, clip_high 0.28:
    -min(1.5, 1.28) = -1.28; -min(-0.5, -0.8) = 0.8; -min(0.5, 0.8) = -0.5; -min(-1.5, -1.28) = 1.5."""
    ratio = t([1.5, 0.5, 0.5, 1.5])
    logp = ratio.log().requires_grad_()
    loss, stats = clipped_surrogate(logp, torch.zeros(1, 4), t([1.0, -1.0, 1.0, -1.0]), m([1, 1, 1, 1]))
    torch.testing.assert_close(loss, t([-1.28, 0.8, -0.5, 1.5]))
    assert stats["clipfrac"].item() == 0.5
    loss.sum().backward()
    # clipped tokens have no gradient; unclipped: d(-r A)/dlogp = -r A
    torch.testing.assert_close(logp.grad, t([0.0, 0.0, -0.5, 1.5]))


def test_truncated_importance_weights_by_hand():
    """old - rollout = [1, -0.5]: e^1 = 2.718 -> capped at 2; e^-0.5 = 0.6065."""
    w = truncated_importance_weights(t([-1.0, -1.0, 0.0]), t([-2.0, -0.5, 5.0]), m([1, 1, 0]), cap=2.0)
    torch.testing.assert_close(w, t([2.0, math.exp(-0.5), 0.0]))


def test_gspo_by_hand():
    """log r = [0.1, 0.3] -> s = exp(0.2) = 1.2214, A = 1: clipped at 1 + 4e-4 -> loss -1.0004, no gradient;
    unclipped (wide range): loss -1.2214, d/dlogp_t = -s / |y| = -0.6107 on each token."""
    logp = t([0.1, 0.3, 7.0]).requires_grad_()
    old, adv, mask = torch.zeros(1, 3), t([1.0, 1.0, 0.0]), m([1, 1, 0])
    loss, _ = gspo_surrogate(logp, old, adv, mask)
    torch.testing.assert_close(loss, t(-1.0004))
    loss, stats = gspo_surrogate(logp, old, adv, mask, clip_low=1.0, clip_high=1.0)
    torch.testing.assert_close(loss, t(-math.exp(0.2)))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, t([-math.exp(0.2) / 2, -math.exp(0.2) / 2, 0.0]))


def test_sequence_truncated_importance_weights_by_hand():
    """Row 0: old - rollout = [0.3, 0.2 | masked 9] -> sum 0.5, w = e^0.5 = 1.6487 (under the cap 2);
    row 1: [1.0, 0.5] -> e^1.5 = 4.48 -> capped at 2; row 2: [-0.4] -> e^-0.4 = 0.6703."""
    old = t([-1.0, -1.0, 9.0], [-1.0, -1.0, 0.0], [-1.4, 0.0, 0.0])
    rollout = t([-1.3, -1.2, 0.0], [-2.0, -1.5, 0.0], [-1.0, 0.0, 0.0])
    mask = m([1, 1, 0], [1, 1, 0], [1, 0, 0])
    w = truncated_sequence_importance_weights(old, rollout, mask, cap=2.0)
    torch.testing.assert_close(w, t(math.exp(0.5), 2.0, math.exp(-0.4)))


def test_gspo_with_sequence_truncated_is_by_hand():
    """GSPO's example above (unclipped: loss -1.2214, d/dlogp_t = -0.6107) weighted by w = 1.5:
    loss -1.8321, gradient -0.9161 per token; the weight carries no gradient of its own."""
    logp = t([0.1, 0.3, 7.0]).requires_grad_()
    old, adv, mask = torch.zeros(1, 3), t([1.0, 1.0, 0.0]), m([1, 1, 0])
    loss, _ = gspo_surrogate(logp, old, adv, mask, clip_low=1.0, clip_high=1.0, weights=t(1.5))
    torch.testing.assert_close(loss, t(-1.5 * math.exp(0.2)))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, t([-0.75 * math.exp(0.2), -0.75 * math.exp(0.2), 0.0]))


def test_reductions_by_hand():
    """per-token [[1, 2 | 0], [3 | 0, 0]]: token mean [1.5, 3]; token sum [3, 3]; / L_max = 4: [0.75, 0.75]."""
    x, mask = t([1.0, 2.0, 9.0], [3.0, 9.0, 9.0]), m([1, 1, 0], [1, 0, 0])
    assert sequence_token_mean(x, mask).tolist() == [1.5, 3.0]
    assert sequence_token_sum(x, mask).tolist() == [3.0, 3.0]
    assert constant_length_sum(x, mask, 4).tolist() == [0.75, 0.75]


# ---------------------------------------------------------------- TRL 1.16's GRPO loss types


def trl_loss(loss_type, logp, old, adv, mask, *, level="token", eps_low=0.2, eps_high=0.28, max_len=None, is_ratio=None):
    """TRL's own ``GRPOTrainer._compute_loss`` on these tensors, with the forward replaced."""
    from trl import GRPOTrainer

    B, T = logp.shape
    accelerator = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x, num_processes=1,
                                  reduce=lambda x, reduction="sum": x, sync_gradients=True)
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros(B, T), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=0.0,
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=is_ratio is not None, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_len or T, accelerator=accelerator,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
    )
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": mask.sum().float()}
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    return GRPOTrainer._compute_loss(trainer, None, inputs)


def random_batch(seed=0, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(B, T, generator=g) * 3).requires_grad_()
    old = (logp + 0.3 * torch.randn(B, T, generator=g)).detach()
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    scores = torch.randn(B // 3, 3, generator=g)
    return logp, old, mask, scores


def grads(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


def test_dapo_matches_trl():
    logp, old, mask, scores = random_batch(0)
    adv = grpo_advantages(scores).view(-1)
    per_token, _ = clipped_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 0.2, 0.28)
    ours = sequence_token_sum(per_token, mask).sum() / mask.sum()  # global_mean over the batch's tokens
    theirs = trl_loss("dapo", logp, old, adv, mask)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads(ours, logp), grads(theirs, logp))


def test_dr_grpo_matches_trl():
    """Dr. GRPO: advantage r - mean(r) (TRL's ``scale_rewards="none"``, grpo_trainer.py 2765-2787), and
    the token sum over B * max_completion_length."""
    logp, old, mask, scores = random_batch(1)
    adv = grpo_advantages(scores, scale=False).view(-1)
    torch.testing.assert_close(adv, (scores - scores.mean(1, keepdim=True)).view(-1))
    per_token, _ = clipped_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 0.2, 0.2)
    ours = constant_length_sum(per_token, mask, 16).mean()
    theirs = trl_loss("dr_grpo", logp, old, adv, mask, eps_high=0.2, max_len=16)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads(ours, logp), grads(theirs, logp))


def test_grpo_reduction_matches_trl():
    logp, old, mask, scores = random_batch(2)
    adv = grpo_advantages(scores).view(-1)
    per_token, _ = clipped_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 0.2, 0.2)
    ours = sequence_token_mean(per_token, mask).mean()
    torch.testing.assert_close(ours, trl_loss("grpo", logp, old, adv, mask, eps_high=0.2))


def test_gspo_matches_trl():
    """TRL's GSPO: ``importance_sampling_level="sequence"`` with ``loss_type="grpo"``."""
    logp, old, mask, scores = random_batch(3)
    old = (logp + 0.001 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(9))).detach()
    adv = grpo_advantages(scores).view(-1)
    ours = gspo_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 3e-4, 4e-4)[0].mean()
    theirs = trl_loss("grpo", logp, old, adv, mask, level="sequence", eps_low=3e-4, eps_high=4e-4)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads(ours, logp), grads(theirs, logp))


def test_sequence_truncated_is_in_gspo_matches_trl():
    """TRL ``vllm_importance_sampling_mode="sequence_truncate"`` with GSPO (importance_sampling_level
    "sequence"): the response's ratio exp(sum_t (old - sampling)) clamped at the cap multiplies its loss."""
    logp, old, mask, scores = random_batch(6)
    rollout = (old + 0.1 * torch.randn(old.shape, generator=torch.Generator().manual_seed(6))).detach()
    adv = grpo_advantages(scores).view(-1)
    w = truncated_sequence_importance_weights(old, rollout, mask, cap=2.0)
    theirs_w = torch.exp(torch.where(mask, old - rollout, 0.0).sum(-1, keepdim=True)).clamp(max=2.0)
    torch.testing.assert_close(w, theirs_w.squeeze(-1))
    ours = gspo_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 3e-4, 4e-4, weights=w)[0].mean()
    theirs = trl_loss("grpo", logp, old, adv, mask, level="sequence", eps_low=3e-4, eps_high=4e-4, is_ratio=theirs_w)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grads(ours, logp), grads(theirs, logp))


def test_truncated_is_matches_trl():
    """TRL ``vllm_importance_sampling_mode="token_truncate"``: ratio exp(old - sampling) clamped at the cap
    (grpo_trainer.py 2660-2686), multiplied into the per-token loss."""
    logp, old, mask, scores = random_batch(4)
    rollout = (old + 0.5 * torch.randn(old.shape, generator=torch.Generator().manual_seed(5))).detach()
    adv = grpo_advantages(scores).view(-1)
    w = truncated_importance_weights(old, rollout, mask, cap=2.0)
    torch.testing.assert_close(w, torch.where(mask, torch.exp(old - rollout).clamp(max=2.0), 0.0))
    per_token, _ = clipped_surrogate(logp, old, adv[:, None].expand_as(mask), mask, 0.2, 0.28, weights=w)
    ours = sequence_token_sum(per_token, mask).sum() / mask.sum()
    theirs = trl_loss("dapo", logp, old, adv, mask, is_ratio=w)
    torch.testing.assert_close(ours, theirs)
