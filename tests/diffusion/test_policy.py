"""The denoising-chain policy: step Gaussian, chain log-probs, and ddpo-pytorch's step on the same tensors."""

import math

import pytest
import torch

from alignkit.diffusion.policy import (
    DiffusionPolicy,
    chain_log_prob,
    denoising_error,
    gaussian_log_prob,
    sample_chain,
    step_log_prob,
    step_mean_std,
)
from alignkit.errors import ConfigError

diffusers = pytest.importorskip("diffusers")


def tiny_policy(seed: int = 0) -> DiffusionPolicy:
    from alignkit.diffusion.digits import build_digits_unet, digits_policy

    return digits_policy(build_digits_unet(seed, width=8))


def test_gaussian_log_prob_hand_worked():
    """x = mean, std 1: -log 1 - 0.5 log 2 pi = -0.918939 per dimension; x = mean + 2, std 2:
    -(2^2)/(2*4) - log 2 - 0.918939 = -0.5 - 0.693147 - 0.918939 = -2.112086."""
    mean = torch.zeros(1, 1, 2, 2)
    assert gaussian_log_prob(mean, mean, torch.tensor(1.0)).item() == pytest.approx(-0.918939, abs=1e-6)
    assert gaussian_log_prob(mean + 2, mean, torch.tensor(2.0)).item() == pytest.approx(-2.112086, abs=1e-6)


def test_step_mean_is_diffusers_ddim_step_without_noise():
    """diffusers' own DDIMScheduler.step at eta=1 with zero variance noise returns mu_theta."""
    policy = tiny_policy()
    policy.scheduler.set_timesteps(10)
    x = torch.randn(3, 1, 8, 8)
    eps = torch.randn(3, 1, 8, 8)
    for t in policy.scheduler.timesteps[[0, 5, 9]]:
        mean, std = step_mean_std(policy, eps, x, t, 10, eta=1.0)
        expected = policy.scheduler.step(eps, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
        assert torch.allclose(mean, expected, atol=1e-5)
        assert std.item() > 0


def _ddpo_pytorch_step_log_prob(scheduler, model_output, timestep, sample, prev_sample, eta):
    """An independent re-derivation of kvablack/ddpo-pytorch ddpo_pytorch/diffusers_patch/ddim_with_logprob.py
    (ddim_step_with_logprob, epsilon prediction, x_0 clipped when the config clips): prev timestep clamped at 0, variance of
    DDIM eq. 16, std = eta * sqrt(variance), Gaussian log-density averaged over all but the batch dim."""
    prev_timestep = torch.clamp(timestep - scheduler.config.num_train_timesteps // scheduler.num_inference_steps,
                                0, scheduler.config.num_train_timesteps - 1)
    alpha_prod_t = scheduler.alphas_cumprod.gather(0, timestep)
    alpha_prod_t_prev = torch.where(prev_timestep >= 0, scheduler.alphas_cumprod.gather(0, prev_timestep),
                                    scheduler.final_alpha_cumprod)
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
    if scheduler.config.clip_sample:
        pred_original_sample = pred_original_sample.clamp(-scheduler.config.clip_sample_range,
                                                          scheduler.config.clip_sample_range)
    variance = ((1 - alpha_prod_t_prev) / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** 0.5
    direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** 0.5 * model_output
    prev_sample_mean = alpha_prod_t_prev ** 0.5 * pred_original_sample + direction
    log_prob = (-((prev_sample - prev_sample_mean) ** 2) / (2 * std_dev_t ** 2) - torch.log(std_dev_t)
                - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi))))
    return log_prob.mean(dim=tuple(range(1, log_prob.ndim)))


def test_step_log_prob_matches_ddpo_pytorch():
    torch.manual_seed(0)
    policy = tiny_policy()
    chain = sample_chain(policy, torch.tensor([1, 2, 3]), num_steps=5, generator=torch.Generator().manual_seed(0))
    for j, t in enumerate(chain.timesteps):
        x_t, x_prev = chain.latents[:, j], chain.latents[:, j + 1]
        with torch.no_grad():
            eps = policy.predict_noise(x_t, t, chain.cond)
            ours = step_log_prob(policy, x_t, t, x_prev, chain.cond, 5, 1.0)
        policy.scheduler.set_timesteps(5)
        ref = _ddpo_pytorch_step_log_prob(policy.scheduler, eps, t.reshape(1), x_t, x_prev, 1.0)
        assert torch.allclose(ours, ref, atol=1e-4), j


def test_sampled_log_probs_are_recomputed_exactly_and_differentiable():
    policy = tiny_policy()
    chain = sample_chain(policy, torch.arange(4), num_steps=4, eta=0.7, generator=torch.Generator().manual_seed(1))
    assert chain.latents.shape == (4, 5, 1, 8, 8) and chain.log_probs.shape == (4, 4)
    again = chain_log_prob(policy, chain, eta=0.7)
    assert torch.allclose(again, chain.log_probs, atol=1e-5)
    again.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.unet.parameters())
    other = chain_log_prob(tiny_policy(seed=1), chain, eta=0.7)
    assert not torch.allclose(other, chain.log_probs)  # another model gives the chain another likelihood


def test_sampling_is_seeded_and_eta_zero_is_refused():
    policy = tiny_policy()
    a = sample_chain(policy, torch.arange(2), num_steps=3, generator=torch.Generator().manual_seed(5))
    b = sample_chain(policy, torch.arange(2), num_steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(ConfigError, match="eta"):
        sample_chain(policy, torch.arange(2), num_steps=3, eta=0.0)


def test_denoising_error_is_the_ddpm_loss():
    policy = tiny_policy()
    x0, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    err = denoising_error(policy, x0, torch.tensor([0, 1]), t, noise)
    abar = policy.scheduler.alphas_cumprod[t].view(2, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        pred = policy.unet(x_t, t, class_labels=torch.tensor([0, 1])).sample
    assert torch.allclose(err, ((pred - noise) ** 2).mean((1, 2, 3)), atol=1e-5)
