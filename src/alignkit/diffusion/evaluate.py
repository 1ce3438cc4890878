"""Evaluation of a diffusion policy: rewards, KL to the start model, diversity, a sample grid.

- rewards: the mean (and standard error) of each reward over ``per_prompt`` fresh samples of every
  prompt, drawn with a fixed seed so that every model sees the same initial noise;
- ``kl``: a Monte-Carlo estimate of KL(pi || pi_ref) between the chain distributions, in nats per
  image: the chain is Markov with Gaussian steps, so log pi(chain)/pi_ref(chain) is the sum of the step
  log-ratios (times D for per-dimension log-probs), averaged over chains sampled from pi. It is 0 for
  the start model, and what DDPO and D3PO's KL regularisers would control;
- ``diversity``: the mean pairwise L2 distance between the images of one prompt, averaged over prompts
  (mode collapse, the usual cost of reward maximisation, drives it down).
"""

from __future__ import annotations

import math

import torch

from alignkit.diffusion.policy import DiffusionPolicy, chain_log_prob, eval_mode, sample_chain


def pairwise_diversity(images: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean over prompts of the mean L2 distance between two different images of that prompt."""
    per_prompt = []
    for prompt in ids.unique():
        group = images[ids == prompt].flatten(1).float()
        if group.shape[0] < 2:
            continue
        dist = torch.cdist(group, group)  # [n, n]
        n = group.shape[0]
        per_prompt.append(dist.sum() / (n * (n - 1)))
    return float(torch.stack(per_prompt).mean()) if per_prompt else 0.0


def _stats(values: torch.Tensor) -> dict[str, float]:
    n = values.numel()
    se = float(values.std() / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(values.mean()), "se": se}


@torch.no_grad()
def evaluate_policy(policy: DiffusionPolicy, reference: DiffusionPolicy | None, rewards: dict, *, num_prompts: int,
                    per_prompt: int = 16, num_steps: int = 10, eta: float = 1.0, seed: int = 1234,
                    condition=lambda ids: ids) -> tuple[dict, torch.Tensor]:
    """Returns ``(result, images)``: ``result`` has ``rewards`` ({name: {mean, se}}), ``kl``, ``diversity``;
    ``images`` ``[num_prompts * per_prompt, C, H, W]`` in [-1, 1], ordered prompt by prompt."""
    ids = torch.arange(num_prompts).repeat_interleave(per_prompt)
    with eval_mode(policy.unet):
        chain = sample_chain(policy, condition(ids), num_steps=num_steps, eta=eta,
                             generator=torch.Generator().manual_seed(seed))
        images = policy.images(chain.x0)
        result: dict = {"rewards": {name: _stats(fn(images, ids).float()) for name, fn in rewards.items()},
                        "diversity": pairwise_diversity(images, ids)}
        if reference is not None:
            ref_logp = chain_log_prob(reference, chain, eta)
            result["kl"] = float((chain.log_probs - ref_logp).sum(1).mean() * policy.dims)
    return result, images
