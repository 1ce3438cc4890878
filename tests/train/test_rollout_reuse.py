"""The rollout reuses the decode's log-probs as pi_old: the same numbers, loss and gradient as the
scoring forward it replaces; the decode's top-k / top-p equal transformers' warpers; no reference
is run at a KL coefficient of 0."""

import copy
from dataclasses import replace

import pytest
import torch

from alignkit.config.rl import PPOConfig
from alignkit.engine.generation import SamplingConfig, sample, sampling_logits
from alignkit.models.reference import FrozenReference
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.rewards import build_reward
from alignkit.train.algorithms import ALGORITHMS
from alignkit.train.ppo import minibatch_loss, rewards_and_advantages, uses_no_reference
from alignkit.train.rollout import ActorCritic, RunningMoments, collect_rollout, disable_dropout

PROMPTS = ("The movie was", "I", "This book is really")


@pytest.fixture(scope="module")
def setup():
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_model(tok)
    disable_dropout(model)
    module = ActorCritic(model, pad_id=tok.pad_token_id)
    reference = FrozenReference(copy.deepcopy(model), tok.pad_token_id)
    return tok, module, reference, [tok(p)["input_ids"] for p in PROMPTS]


def without_policy_logprobs(*args, **kwargs):
    """The same sampler, its log-probs dropped: the rollout must score the samples again."""
    samples = sample(*args, **kwargs)
    samples.policy_logprobs = samples.policy_entropy = None
    return samples


def rollouts(setup, sampling):
    tok, module, reference, prompts = setup
    reward = build_reward({"kind": "vader"})
    reused = collect_rollout(module, reference, reward, tok, prompts, sampling, values=False)
    scored = collect_rollout(module, reference, reward, tok, prompts, sampling, values=False,
                             sampler=without_policy_logprobs)
    assert reused.response_ids == scored.response_ids  # the same seeded samples
    return reused, scored


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 20, 0.9)])
def test_decode_logprobs_and_entropies_equal_the_scoring_forward(setup, temperature, top_k, top_p):
    """Whatever the sampling temperature and truncation, the kept log-probs are the policy's own
    at temperature 1 (the losses' distribution), computed from the decode's logits."""
    sampling = SamplingConfig(num_samples=4, max_new_tokens=10, seed=5, temperature=temperature, top_k=top_k,
                              top_p=top_p)
    reused, scored = rollouts(setup, sampling)
    assert torch.equal(reused.mask, scored.mask)
    torch.testing.assert_close(reused.logprobs, scored.logprobs, atol=2e-5, rtol=0)
    torch.testing.assert_close(reused.entropy, scored.entropy, atol=2e-5, rtol=0)
    torch.testing.assert_close(reused.ref_logprobs, scored.ref_logprobs)


def test_reused_old_logprobs_give_the_loss_and_gradient_of_the_extra_forward(setup):
    """GRPO's first minibatch, from each rollout: the same loss (ratio 1) and the same gradient."""
    tok, module, reference, prompts = setup
    cfg = PPOConfig(kl_coef=0.04)
    algo = ALGORITHMS["grpo"]
    reused, scored = rollouts(setup, SamplingConfig(num_samples=4, max_new_tokens=10, seed=7))

    class NoAccelerator:
        num_processes = 1

        @staticmethod
        def autocast():
            return torch.autocast("cpu", enabled=False)

    results = []
    for r in (reused, scored):
        _, _, advantages, returns = rewards_and_advantages(algo, cfg, r, RunningMoments(), cfg.kl_coef)
        module.zero_grad()
        loss, stats = minibatch_loss(algo, cfg, module, NoAccelerator, r, torch.arange(len(PROMPTS)), advantages,
                                     returns, cfg.kl_coef)
        loss.sum().backward()
        grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
        results.append((loss.detach(), stats["ratio_mean"], grads))
    (loss_a, ratio_a, grads_a), (loss_b, ratio_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ratio_a, torch.tensor(1.0), atol=1e-5, rtol=0)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_top_k_and_top_p_keep_the_tokens_transformers_keeps():
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(5, 50) * 3
    cfg = SamplingConfig(temperature=0.7, top_k=12, top_p=0.8)
    hf = logits.clone()
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(12), TopPLogitsWarper(0.8)):
        hf = warper(None, hf)
    ours = sampling_logits(logits, cfg)
    assert torch.equal(torch.isinf(ours), torch.isinf(hf))
    torch.testing.assert_close(ours[~torch.isinf(ours)], hf[~torch.isinf(hf)])
    assert (~torch.isinf(ours)).sum(1).min() >= 1


def test_no_reference_is_run_at_a_kl_coefficient_of_zero(setup):
    """``kl_coef: 0`` (fixed): no reference; log pi_ref is taken as log pi, so the KL is exactly 0."""
    assert uses_no_reference(PPOConfig(kl_coef=0.0))
    assert not uses_no_reference(PPOConfig(kl_coef=0.0, target_kl=6.0))
    assert not uses_no_reference(PPOConfig(kl_coef=0.04))
    tok, module, _, prompts = setup
    r = collect_rollout(module, None, build_reward({"kind": "vader"}), tok, prompts,
                        replace(SamplingConfig(), num_samples=2, max_new_tokens=6), values=False)
    assert torch.equal(r.ref_logprobs, r.logprobs)


def test_under_bf16_autocast_the_rollout_scores_its_samples_again(setup, monkeypatch):
    """Lower precision: the decode's and the forward's log-probs differ by ~1e-2, so pi_old comes from the
    forward the update will repeat (ratio exactly 1), not from the decode."""
    tok, module, reference, prompts = setup
    calls = []
    forward = type(module).forward
    monkeypatch.setattr(type(module), "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    sampling = SamplingConfig(num_samples=2, max_new_tokens=4, seed=1)
    collect_rollout(module, reference, build_reward({"kind": "vader"}), tok, prompts, sampling, values=False)
    assert calls == []  # fp32: the decode's log-probs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        collect_rollout(module, reference, build_reward({"kind": "vader"}), tok, prompts, sampling, values=False)
    assert calls == [1]
