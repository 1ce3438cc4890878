"""One trainer for every registered diffusion method: sample chains, turn them into the method's
feedback, compute the method's inputs, step.

A round, as in RAFT's and DDPO's outer loops:

1. sample ``prompts_per_round`` prompt ids, each ``samples_per_prompt`` (K) times, and their denoising
   chains from the current policy (:func:`~alignkit.diffusion.policy.sample_chain`; the two chains of a
   pair start from one x_T when the loss reads chain log-probs);
2. turn them into the method's ``feedback`` (:mod:`alignkit.diffusion.registry`): the best of each
   prompt's K samples (or the top fraction of all) by reward, a per-prompt normalised reward per chain,
   or a preferred/dispreferred pair per prompt from the labeller;
3. for ``epochs`` passes over that data in mini-batches, compute the method's ``inputs`` (denoising
   errors or chain log-probs, of the policy and, if needed, of the start model) and take an AdamW step
   on the mean loss.

Nothing here looks at a method's name; the registry entry's tags decide.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from alignkit.diffusion.policy import (
    AdapterDisabled,
    Chain,
    DiffusionPolicy,
    chain_log_prob,
    check_eta,
    eval_mode,
    noised_prediction,
    sample_chain,
    squared_distance,
)
from alignkit.diffusion.registry import check_diffusion_hyperparameters, get_diffusion_method, uses_reference
from alignkit.errors import ConfigError
from alignkit.losses.reduce import global_mean

log = logging.getLogger("alignkit")

ImageReward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images [B,C,H,W], prompt ids [B]) -> [B]
Labeller = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (images a, images b, ids) -> a preferred [B] bool


@dataclass
class DiffusionTask:
    """What a method trains on: a policy, prompts (ids ``0..num_prompts-1``) and the feedback source.

    ``condition`` maps prompt ids ``[B]`` to the UNet condition (the ids themselves for class labels,
    prompt embeddings for text). A ``best_of_k`` or ``advantages`` method needs ``reward``; a ``pairs``
    method needs ``labeller`` (any function: a person's choices, a rule, a reward comparison).
    """

    policy: DiffusionPolicy
    num_prompts: int
    condition: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids
    reward: ImageReward | None = None
    labeller: Labeller | None = None


def reward_labeller(reward: ImageReward) -> Labeller:
    """A scripted labeller preferring the image a reward scores higher (ties go to the first)."""

    def label(images_a: torch.Tensor, images_b: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return reward(images_a, ids) >= reward(images_b, ids)

    return label


@dataclass
class DiffusionTrainConfig:
    method: str = "ddpo"  # a name from alignkit.diffusion.DIFFUSION_METHODS
    hparams: dict = field(default_factory=dict)  # the method's hyper-parameters (paper defaults otherwise)
    rounds: int = 8  # sample-then-train rounds
    prompts_per_round: int = 32  # prompts sampled per round
    samples_per_prompt: int = 4  # K samples per prompt (pairs methods: K/2 pairs)
    num_steps: int = 10  # DDIM steps per chain
    eta: float = 1.0  # DDIM stochasticity (1: DDPM); > 0 so that steps have log-probs
    learning_rate: float = 1e-4  # AdamW learning rate
    batch_size: int = 16  # examples (kept samples, chains or pairs) per optimizer step
    epochs: int = 1  # passes over a round's data (RAFT's E; with RAFT's anchor several passes do not drift)
    keep: Literal["per_prompt", "global"] = "per_prompt"  # best_of_k: best of each prompt's K, or a global ranking
    keep_fraction: float = 0.25  # best_of_k with keep=global: fraction of all samples kept
    max_grad_norm: float = 1.0  # gradient clipping (0 disables)
    seed: int = 0  # sampling and training seed


def reference_policy(policy: DiffusionPolicy) -> DiffusionPolicy:
    """The start model: the UNet with its LoRA adapters disabled, else a frozen copy."""
    if getattr(policy.unet, "_hf_peft_config_loaded", False):
        unet = AdapterDisabled(policy.unet)
    else:
        unet = copy.deepcopy(policy.unet).eval().requires_grad_(False)
    return DiffusionPolicy(unet, policy.scheduler, policy.sample_shape, policy.cond_key, policy.decode)


def _group_normalise(values: torch.Tensor, k: int) -> torch.Tensor:
    """(r - mean) / (std + 1e-8) within each prompt's K samples (over all when K = 1): ``[P*K]``."""
    groups = values.view(-1, k) if k > 1 else values.view(1, -1)
    adv = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-8)
    return adv.reshape(-1)


@dataclass
class Feedback:
    """A round's training data: one chain per slot (one slot, or ``w``/``l`` for pairs) and extras."""

    slots: dict[str, Chain]
    extra: dict[str, torch.Tensor]
    metrics: dict[str, float]

    def __len__(self) -> int:
        return next(iter(self.slots.values())).latents.shape[0]

    def batch(self, index: torch.Tensor) -> Feedback:
        return Feedback({k: c.select(index) for k, c in self.slots.items()},
                        {k: v[index] for k, v in self.extra.items()}, {})


def build_feedback(kind: str, chains: Chain, ids: torch.Tensor, images: torch.Tensor, task: DiffusionTask,
                   cfg: DiffusionTrainConfig) -> Feedback:
    """Step 2 of a round: ``chains`` ``[P*K]`` (each prompt's K samples adjacent) -> the method's data."""
    k = cfg.samples_per_prompt
    if kind == "pairs":
        if task.labeller is None:
            raise ConfigError(f"method {cfg.method!r} learns from pairwise preferences: give the task a labeller")
        if k < 2 or k % 2:
            raise ConfigError(f"samples_per_prompt: {k}; a pairs method compares samples two by two, give an even K")
        first = torch.arange(0, len(ids), 2)  # K/2 pairs per prompt: samples (0, 1), (2, 3), ...
        prefer_a = task.labeller(images[first], images[first + 1], ids[first]).bool().to(first.device)
        w = torch.where(prefer_a, first, first + 1)
        return Feedback({"w": chains.select(w), "l": chains.select(torch.where(prefer_a, first + 1, first))}, {},
                        {"preferred_first": float(prefer_a.float().mean())})
    if task.reward is None:
        raise ConfigError(f"method {cfg.method!r} learns from rewards: give the task a reward")
    rewards = task.reward(images, ids).float().cpu()
    metrics = {"reward": float(rewards.mean())}
    if kind == "advantages":
        return Feedback({"": chains}, {"advantages": _group_normalise(rewards, k)}, metrics)
    if cfg.keep == "global":
        kept = rewards.topk(max(1, round(cfg.keep_fraction * len(rewards)))).indices
    else:
        kept = rewards.view(-1, k).argmax(1) + torch.arange(0, len(rewards), k)
    metrics["kept_reward"] = float(rewards[kept].mean())
    return Feedback({"": chains.select(kept)}, {}, metrics)


def compute_inputs(kind: str, policy: DiffusionPolicy, reference: DiffusionPolicy | None, data: Feedback,
                   eta: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Step 3: the loss's named inputs for a mini-batch, suffixed by slot (``err_w``, ``log_probs``...).

    Denoising errors of a pair share one t and one eps per example (as Diffusion-DPO requires);
    reference values are computed without gradients. With a reference, ``eps_gap`` is
    ||eps_theta - eps_ref||^2 / D on the same noised input (RAFT's anchor), differentiable in the policy.
    """
    out: dict[str, torch.Tensor] = dict(data.extra)
    first = next(iter(data.slots.values()))
    n = first.latents.shape[0]
    if kind == "denoising_error":
        num_train = policy.scheduler.config.num_train_timesteps
        t = torch.randint(0, num_train, (n,), generator=generator)
        noise = torch.randn(first.x0.shape, generator=generator)
        for slot, chain in data.slots.items():
            sfx = f"_{slot}" if slot else ""
            eps = noised_prediction(policy, chain.x0, chain.cond, t, noise)
            out[f"err{sfx}"] = squared_distance(eps, noise)
            if reference is not None:
                with torch.no_grad():
                    eps_ref = noised_prediction(reference, chain.x0, chain.cond, t, noise)
                out[f"ref_err{sfx}"] = squared_distance(eps_ref, noise)
                out[f"eps_gap{sfx}"] = squared_distance(eps, eps_ref)
        return out
    for slot, chain in data.slots.items():
        sfx = f"_{slot}" if slot else ""
        out[f"log_probs{sfx}"] = chain_log_prob(policy, chain, eta)
        out[f"old_log_probs{sfx}"] = chain.log_probs
        if reference is not None:
            with torch.no_grad():
                out[f"ref_log_probs{sfx}"] = chain_log_prob(reference, chain, eta)
    return out


def _initial_noise(fn, policy: DiffusionPolicy, n: int, generator: torch.Generator) -> torch.Tensor:
    """x_T of a round's ``n`` chains ``[n, C, H, W]``: one draw per chain, except that the two chains of a pair
    share theirs when the loss reads chain log-probs (D3PO, as the authors' code samples its pairs).

    x_T is no action of the policy: with two draws, which image of a pair wins is largely decided by
    the starting noise, and the per-step log-prob ratios the loss raises or lowers carry no signal about it.
    Sharing x_T leaves the denoising steps as the only difference between the two images.
    """
    if fn.feedback == "pairs" and fn.inputs == "chain_log_prob":
        return torch.randn((n // 2, *policy.sample_shape), generator=generator).repeat_interleave(2, dim=0)
    return torch.randn((n, *policy.sample_shape), generator=generator)


def call_loss(fn, inputs: dict[str, torch.Tensor], hparams: dict):
    """``fn`` with the inputs its signature names (the rest of ``inputs`` is ignored; an input with a default
    may be absent, as RAFT's ``eps_gap`` without a reference) and ``hparams``."""
    params = inspect.signature(fn).parameters
    wanted = {n: inputs[n] for n, p in params.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY
              and (n in inputs or p.default is inspect.Parameter.empty)}
    return fn(**wanted, **hparams)


def train_diffusion(task: DiffusionTask, cfg: DiffusionTrainConfig, progress: bool = False) -> list[dict]:
    """Train ``task.policy.unet`` in place with ``cfg.method``; returns one metrics record per round."""
    fn = get_diffusion_method(cfg.method)
    check_diffusion_hyperparameters(cfg.method, cfg.hparams)
    check_eta(cfg.eta)
    policy = task.policy
    reference = reference_policy(policy) if uses_reference(cfg.method, cfg.hparams) else None
    params = [p for p in policy.unet.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the UNet has no trainable parameters (a LoRA with no target modules?)")
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for round_ in range(cfg.rounds):
        t0 = time.perf_counter()
        ids = torch.randint(0, task.num_prompts, (cfg.prompts_per_round,), generator=gen)
        ids = ids.repeat_interleave(cfg.samples_per_prompt)  # [P*K], each prompt's samples adjacent
        with eval_mode(policy.unet):
            chains = sample_chain(policy, task.condition(ids), num_steps=cfg.num_steps, eta=cfg.eta, generator=gen,
                                  initial_noise=_initial_noise(fn, policy, len(ids), gen))
            images = policy.images(chains.x0)
        data = build_feedback(fn.feedback, chains, ids, images, task, cfg)
        record: dict = {"round": round_ + 1, **data.metrics}
        losses, metrics = [], {}
        policy.unet.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(data), generator=gen)
            for start in range(0, len(data), cfg.batch_size):
                batch = data.batch(order[start:start + cfg.batch_size])
                inputs = compute_inputs(fn.inputs, policy, reference, batch, cfg.eta, gen)
                per_example, metrics = call_loss(fn, inputs, cfg.hparams)
                loss = global_mean(per_example.sum(), per_example.shape[0])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                losses.append(float(loss.detach()))
        policy.unet.eval()
        record.update(loss=sum(losses) / max(len(losses), 1), seconds=time.perf_counter() - t0,
                      **{f"{cfg.method}/{k}": v for k, v in metrics.items()})
        history.append(record)
        if progress:
            log.info("%s round %d/%d: %s", cfg.method, round_ + 1, cfg.rounds,
                     ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)))
    return history
