"""The diffusion trainer: feedback built from a round by hand, inputs routed by the registry's tags,
one round of every registered method on a tiny digits UNet."""

import pytest
import torch

from alignkit.diffusion import DIFFUSION_METHODS
from alignkit.diffusion.policy import Chain
from alignkit.diffusion.trainer import (
    DiffusionTask,
    DiffusionTrainConfig,
    build_feedback,
    call_loss,
    compute_inputs,
    reference_policy,
    reward_labeller,
    train_diffusion,
)
from alignkit.errors import ConfigError

pytest.importorskip("diffusers")


def _chains(n: int) -> Chain:
    latents = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 3, 1, 2, 2).clone()
    return Chain(latents, torch.tensor([999, 499]), torch.zeros(n, 2), torch.arange(n))


def _reward_from_first_pixel(images, ids):
    return torch.tensor([1.0, 3.0, 4.0, 0.0])[images[:, 0, 0, 0].long()]


def _task(**kw):
    from alignkit.diffusion.digits import build_digits_unet, digits_policy

    return DiffusionTask(digits_policy(build_digits_unet(0, width=8)), 10, **kw)


def test_best_of_k_keeps_each_prompts_best_or_a_global_top_fraction():
    """Rewards [1, 3 | 4, 0] for two prompts of K=2: per prompt keeps samples 1 and 2;
    a global ranking with keep_fraction 0.5 keeps the two best overall, 2 (4.0) then 1 (3.0)."""
    chains = _chains(4)
    task = DiffusionTask(policy=None, num_prompts=2, reward=_reward_from_first_pixel)
    cfg = DiffusionTrainConfig(method="diffusion_raft", samples_per_prompt=2)
    data = build_feedback("best_of_k", chains, torch.tensor([0, 0, 1, 1]), chains.x0, task, cfg)
    assert data.slots[""].cond.tolist() == [1, 2] and data.metrics["kept_reward"] == pytest.approx(3.5)
    cfg.keep, cfg.keep_fraction = "global", 0.5
    data = build_feedback("best_of_k", chains, torch.tensor([0, 0, 1, 1]), chains.x0, task, cfg)
    assert data.slots[""].cond.tolist() == [2, 1]


def test_advantages_are_normalised_within_each_prompt():
    """Prompt 0 rewards [1, 3]: mean 2, sample std sqrt(2) -> [-0.7071, 0.7071]; prompt 1 [4, 0] -> [0.7071, -0.7071]."""
    chains = _chains(4)
    task = DiffusionTask(policy=None, num_prompts=2, reward=_reward_from_first_pixel)
    data = build_feedback("advantages", chains, torch.tensor([0, 0, 1, 1]), chains.x0, task,
                          DiffusionTrainConfig(method="ddpo", samples_per_prompt=2))
    assert data.extra["advantages"].tolist() == pytest.approx([-0.70711, 0.70711, 0.70711, -0.70711], abs=1e-4)


def test_pairs_follow_the_labeller_and_need_one():
    chains = _chains(4)
    task = DiffusionTask(policy=None, num_prompts=2, labeller=reward_labeller(_reward_from_first_pixel))
    cfg = DiffusionTrainConfig(method="d3po", samples_per_prompt=2)
    data = build_feedback("pairs", chains, torch.tensor([0, 0, 1, 1]), chains.x0, task, cfg)
    assert data.slots["w"].cond.tolist() == [1, 2] and data.slots["l"].cond.tolist() == [0, 3]
    with pytest.raises(ConfigError, match="even K"):
        build_feedback("pairs", chains, torch.tensor([0, 0, 1, 1]), chains.x0, task,
                       DiffusionTrainConfig(method="d3po", samples_per_prompt=3))
    with pytest.raises(ConfigError, match="labeller"):
        build_feedback("pairs", chains, torch.tensor([0, 0, 1, 1]), chains.x0, DiffusionTask(None, 2), cfg)
    with pytest.raises(ConfigError, match="reward"):
        build_feedback("advantages", chains, torch.tensor([0, 0, 1, 1]), chains.x0, DiffusionTask(None, 2), cfg)


def test_call_loss_passes_only_what_the_loss_names():
    def loss(err, *, scale=1.0):
        return err * scale, {}

    out, _ = call_loss(loss, {"err": torch.tensor([2.0]), "ref_err": torch.tensor([9.0])}, {"scale": 3.0})
    assert out.tolist() == [6.0]


def test_denoising_inputs_share_t_and_noise_and_give_the_gap_to_the_reference():
    """With a reference equal to the policy, ref_err = err and the gap is 0; after moving the policy, the gap
    is ||eps_theta - eps_ref||^2 / D on the same noised input, and only it and err carry gradients."""
    from alignkit.diffusion.trainer import Feedback

    task = _task()
    ref = reference_policy(task.policy)
    chain = Chain(torch.randn(2, 2, 1, 8, 8), torch.tensor([999]), torch.zeros(2, 1), torch.tensor([3, 7]))
    data = Feedback({"": chain}, {}, {})
    inputs = compute_inputs("denoising_error", task.policy, ref, data, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(inputs["err"], inputs["ref_err"]) and inputs["eps_gap"].tolist() == [0.0, 0.0]
    with torch.no_grad():
        for p in task.policy.unet.parameters():
            p.add_(0.01)
    inputs = compute_inputs("denoising_error", task.policy, ref, data, 1.0, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)  # compute_inputs draws t, then eps
    t, noise = torch.randint(0, 1000, (2,), generator=gen), torch.randn(2, 1, 8, 8, generator=gen)
    x_t = task.policy.scheduler.add_noise(chain.x0, noise, t)
    with torch.no_grad():
        eps, eps_ref = task.policy.predict_noise(x_t, t, chain.cond), ref.predict_noise(x_t, t, chain.cond)
    assert inputs["eps_gap"].detach() == pytest.approx(((eps - eps_ref) ** 2).flatten(1).mean(1), rel=1e-5)
    assert inputs["err"].detach() == pytest.approx(((eps - noise) ** 2).flatten(1).mean(1), rel=1e-5)
    assert inputs["eps_gap"].requires_grad and not inputs["ref_err"].requires_grad
    assert "eps_gap" not in compute_inputs("denoising_error", task.policy, None, data, 1.0, torch.Generator())


def test_raft_builds_a_reference_only_with_an_anchor(monkeypatch):
    import alignkit.diffusion.trainer as trainer
    from alignkit.diffusion.digits import ink_reward

    built = []
    monkeypatch.setattr(trainer, "reference_policy", lambda policy: built.append(1) or reference_policy(policy))
    cfg = DiffusionTrainConfig(method="diffusion_raft", rounds=1, prompts_per_round=2, samples_per_prompt=2,
                               num_steps=2, batch_size=4, epochs=2)
    history = train_diffusion(_task(reward=ink_reward), cfg)
    assert not built and "diffusion_raft/eps_gap" not in history[0]
    cfg.hparams = {"anchor": 4.0}
    history = train_diffusion(_task(reward=ink_reward), cfg)
    assert built == [1] and history[0]["diffusion_raft/eps_gap"] > 0  # the second epoch's step sees the first's


def test_reference_is_a_frozen_copy_without_lora():
    task = _task()
    ref = reference_policy(task.policy)
    assert ref.unet is not task.policy.unet and not any(p.requires_grad for p in ref.unet.parameters())
    x, t, c = torch.randn(2, 1, 8, 8), torch.tensor([10, 900]), torch.tensor([3, 4])
    with torch.no_grad():
        for p in task.policy.unet.parameters():
            p.add_(0.01)
        assert not torch.allclose(ref.predict_noise(x, t, c), task.policy.predict_noise(x, t, c))


@pytest.mark.parametrize("method", sorted(DIFFUSION_METHODS))
def test_one_round_of_every_method_updates_the_unet(method):
    from alignkit.diffusion.digits import ink_reward

    task = _task(reward=ink_reward, labeller=reward_labeller(ink_reward))
    before = [p.detach().clone() for p in task.policy.unet.parameters()]
    cfg = DiffusionTrainConfig(method=method, rounds=1, prompts_per_round=4, samples_per_prompt=2, num_steps=3,
                               batch_size=4, learning_rate=1e-3)
    history = train_diffusion(task, cfg)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["loss"]))
    assert any(not torch.equal(b, p) for b, p in zip(before, task.policy.unet.parameters()))


def test_unknown_hyperparameter_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.beta: diffusion method 'ddpo' has no hyper-parameter 'beta'"):
        train_diffusion(_task(), DiffusionTrainConfig(method="ddpo", hparams={"beta": 1.0}))


def test_the_two_chains_of_a_d3po_pair_start_from_one_noise():
    """D3PO (pairs of chain log-probs) draws x_T once per pair, as the authors' code samples its pairs;
    Diffusion-DPO (pairs of denoising errors) and DDPO draw one per chain."""
    from alignkit.diffusion.registry import get_diffusion_method
    from alignkit.diffusion.trainer import _initial_noise

    policy = _task().policy
    shared = _initial_noise(get_diffusion_method("d3po"), policy, 4, torch.Generator().manual_seed(0))
    assert shared.shape == (4, 1, 8, 8)
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[2], shared[3])
    assert not torch.equal(shared[1], shared[2])
    for name in ("diffusion_dpo", "ddpo"):
        own = _initial_noise(get_diffusion_method(name), policy, 4, torch.Generator().manual_seed(0))
        assert not torch.equal(own[0], own[1])
