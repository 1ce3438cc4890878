"""A denoising chain as a policy: each DDIM/DDPM step is a Gaussian action (DDPO, D3PO).

Sampling ``x_T -> x_{T-1} -> ... -> x_0`` with DDIM (Song et al. 2021, eq. 12) at ``eta > 0`` draws
every step from a Gaussian

    pi(x_{t-1} | x_t, c) = N(mu_theta(x_t, t, c), sigma_t^2 I),
    mu_theta = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_t^2) eps_theta,
    x0_hat   = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)   (clipped if the scheduler clips),
    sigma_t  = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)),

so a chain is a trajectory of an MDP whose log-likelihood is a sum of Gaussian log-densities
(Black et al. 2023, DDPO, sec. 4.2; Yang et al. 2023, D3PO, sec. 4.1). ``eta = 1`` is ancestral
DDPM sampling on the sub-sequence of timesteps. :func:`step_log_prob` is the one place that
computes that density; sampling and every method's re-scoring go through it.

Log-probs are per dimension: the Gaussian log-density of a step divided by the number of pixels
(or latent entries) ``D``, as ddpo-pytorch's ``ddim_step_with_logprob`` reports them, so ratios and
clip ranges carry over from the papers' code. Multiply by :attr:`DiffusionPolicy.dims` for the
log-density itself (the KL estimate does).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from alignkit.errors import ConfigError


@dataclass
class DiffusionPolicy:
    """A noise-predicting network, its noise schedule and how a condition reaches it.

    ``cond_key`` names the UNet argument the condition tensor is passed as: ``class_labels`` for a
    class-conditional :class:`diffusers.UNet2DModel` (cond ``[B]`` ints), ``encoder_hidden_states``
    for a text-conditional :class:`diffusers.UNet2DConditionModel` (cond ``[B, L, E]`` prompt
    embeddings). ``decode`` maps a final latent ``x_0`` to an image in [-1, 1] (identity in pixel
    space, the VAE decoder for latent diffusion).
    """

    unet: nn.Module
    scheduler: object  # a diffusers DDIMScheduler (alphas_cumprod, final_alpha_cumprod, add_noise)
    sample_shape: tuple[int, ...]  # (C, H, W) of x_t
    cond_key: str = "class_labels"
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def dims(self) -> int:
        """D, the entries of one x_t: per-dimension log-probs times D are log-densities."""
        return math.prod(self.sample_shape)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t, c): ``[B, C, H, W]``; ``t`` a scalar or ``[B]``."""
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
        return self.unet(x_t, t, **{self.cond_key: cond}).sample

    def images(self, x0: torch.Tensor) -> torch.Tensor:
        return x0 if self.decode is None else self.decode(x0)


class AdapterDisabled(nn.Module):
    """The base network under a peft LoRA: the UNet's forward with its adapters switched off.

    The reference of D3PO / Diffusion-DPO when only a LoRA trains, without a second copy of the weights.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.inner = unet

    def forward(self, *args, **kwargs):
        self.inner.disable_adapters()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.inner.enable_adapters()


@dataclass
class Chain:
    """Sampled denoising chains of ``B`` conditions over ``T`` steps.

    latents: ``[B, T+1, C, H, W]``, ``x_T`` first and ``x_0`` last.
    timesteps: ``[T]``, the timestep t of the step ``x_t -> x_{t_prev}`` at each position.
    log_probs: ``[B, T]`` per-dimension log pi(x_{t_prev} | x_t, c) under the sampling policy.
    cond: ``[B, ...]`` the condition of each chain.
    """

    latents: torch.Tensor
    timesteps: torch.Tensor
    log_probs: torch.Tensor
    cond: torch.Tensor

    @property
    def x0(self) -> torch.Tensor:
        return self.latents[:, -1]

    def select(self, index: torch.Tensor) -> Chain:
        return Chain(self.latents[index], self.timesteps, self.log_probs[index], self.cond[index])


def _alphas(policy: DiffusionPolicy, t: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """abar_t and abar_{t_prev} for the DDIM sub-sequence of ``num_steps`` steps."""
    sched = policy.scheduler
    prev = int(t) - sched.config.num_train_timesteps // num_steps
    abar = sched.alphas_cumprod[int(t)]
    abar_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
    return abar.float(), torch.as_tensor(abar_prev).float()


def step_mean_std(policy: DiffusionPolicy, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                  num_steps: int, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mu_theta(x_t, t, c) ``[B, C, H, W]`` and sigma_t (scalar) of one DDIM step (module docstring)."""
    abar, abar_prev = _alphas(policy, t, num_steps)
    x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    config = policy.scheduler.config
    if config.clip_sample:  # pixel models: at abar_t ~ 0 the division above explodes without it
        x0_hat = x0_hat.clamp(-config.clip_sample_range, config.clip_sample_range)
    var = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    std = eta * var.sqrt()
    mean = abar_prev.sqrt() * x0_hat + (1 - abar_prev - std**2).clamp(min=0).sqrt() * eps
    return mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-dimension log N(x; mean, std^2 I): ``[B, ...] -> [B]`` (mean over all but the batch dim)."""
    logp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return logp.flatten(1).mean(1)


def step_log_prob(policy: DiffusionPolicy, x_t: torch.Tensor, t: torch.Tensor, x_prev: torch.Tensor,
                  cond: torch.Tensor, num_steps: int, eta: float) -> torch.Tensor:
    """log pi_theta(x_prev | x_t, c) per dimension, ``[B]``; differentiable in the policy's weights."""
    mean, std = step_mean_std(policy, policy.predict_noise(x_t, t, cond), x_t, t, num_steps, eta)
    return gaussian_log_prob(x_prev.detach(), mean, std)


def check_eta(eta: float) -> None:
    if eta <= 0:
        raise ConfigError(f"eta: {eta} makes DDIM deterministic, so a step has no log-probability; "
                          "use eta > 0 (1.0 is DDPM sampling)")


def timesteps_for(policy: DiffusionPolicy, num_steps: int) -> torch.Tensor:
    policy.scheduler.set_timesteps(num_steps)
    return policy.scheduler.timesteps.clone()


@torch.no_grad()
def sample_chain(policy: DiffusionPolicy, cond: torch.Tensor, *, num_steps: int, eta: float = 1.0,
                 generator: torch.Generator | None = None, initial_noise: torch.Tensor | None = None) -> Chain:
    """Sample one chain per condition, recording every latent and step log-prob (``[B]`` conds).

    ``initial_noise`` ``[B, C, H, W]``: x_T (drawn from ``generator`` when None).
    """
    check_eta(eta)
    timesteps = timesteps_for(policy, num_steps)
    device = next(policy.unet.parameters()).device
    if initial_noise is None:
        initial_noise = torch.randn((cond.shape[0], *policy.sample_shape), generator=generator)
    x = initial_noise.to(device)
    latents, log_probs = [x], []
    for t in timesteps:
        mean, std = step_mean_std(policy, policy.predict_noise(x, t, cond), x, t, num_steps, eta)
        x_prev = mean + std * torch.randn(x.shape, generator=generator).to(device)
        log_probs.append(gaussian_log_prob(x_prev, mean, std))
        latents.append(x_prev)
        x = x_prev
    return Chain(torch.stack(latents, 1), timesteps, torch.stack(log_probs, 1), cond)


def chain_log_prob(policy: DiffusionPolicy, chain: Chain, eta: float = 1.0,
                   steps: torch.Tensor | None = None) -> torch.Tensor:
    """log pi(x_{t_prev} | x_t, c) of the chain's steps under ``policy``: ``[B, T]`` (or ``[B, len(steps)]``).

    The one re-scoring function of DDPO (ratio to the sampling policy), D3PO (ratio to the
    reference) and the KL estimate (sum over steps of log pi - log pi_ref, times D).
    """
    num_steps = chain.timesteps.shape[0]
    positions = range(num_steps) if steps is None else steps.tolist()
    out = [step_log_prob(policy, chain.latents[:, j], chain.timesteps[j], chain.latents[:, j + 1], chain.cond,
                         num_steps, eta) for j in positions]
    return torch.stack(out, 1)


def noised_prediction(policy: DiffusionPolicy, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                      noise: torch.Tensor) -> torch.Tensor:
    """eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, c) ``[B, C, H, W]``: the prediction the DDPM loss scores."""
    return policy.predict_noise(policy.scheduler.add_noise(x0, noise, t), t, cond)


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 / D per example: ``[B, ...] -> [B]``."""
    return ((a - b) ** 2).flatten(1).mean(1)


def denoising_error(policy: DiffusionPolicy, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
    """||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, c)||^2 / D, ``[B]`` (Ho et al. 2020, eq. 14).

    The DDPM training loss of each example: RAFT fine-tunes on it, Diffusion-DPO compares it.
    """
    return squared_distance(noised_prediction(policy, x0, cond, t, noise), noise)


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
