"""The real path: the same methods on a Stable Diffusion pipeline, a LoRA on its UNet.

:func:`load_sd_task` reads a diffusers pipeline folder (``StableDiffusionPipeline.save_pretrained``
layout: ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), freezes the VAE and
the text encoder, adds a peft LoRA to the UNet's attention projections (the only trainable weights,
as in DDPO, D3PO and Diffusion-DPO's SD runs; the reference is the UNet with the adapter disabled),
encodes the prompts once, and returns a :class:`~alignkit.diffusion.trainer.DiffusionTask` whose
policy denoises latents and decodes them with the VAE for rewards and labellers.

Classifier-free guidance is not applied while sampling training chains (the chain log-prob is then
the conditional model's own), which is what D3PO and DDPO's log-probs assume when guidance is off.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignkit.diffusion.policy import DiffusionPolicy
from alignkit.diffusion.trainer import DiffusionTask, ImageReward, Labeller
from alignkit.errors import AlignkitError

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet attention projections (diffusers' LoRA examples)


def add_unet_lora(unet, rank: int = 4, alpha: int | None = None, targets=LORA_TARGETS):
    """Freeze ``unet`` and add a trainable peft LoRA of ``rank`` on ``targets`` (diffusers' ``add_adapter``)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=list(targets)))
    return unet


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """``[len(prompts), L, E]`` text-encoder hidden states, the UNet's ``encoder_hidden_states``."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def sd_policy(unet, vae, scheduler) -> DiffusionPolicy:
    """A latent-diffusion policy: x_t are VAE latents, ``decode`` gives images in [-1, 1]."""
    size = unet.config.sample_size
    scaling = vae.config.scaling_factor

    def decode(latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return vae.decode(latents / scaling).sample.clamp(-1, 1)

    return DiffusionPolicy(unet, scheduler, (unet.config.in_channels, size, size), cond_key="encoder_hidden_states",
                           decode=decode)


def ddim_for(scheduler_config: dict):
    """DDIM from a pipeline's scheduler config, with a stochastic last step (``set_alpha_to_one=False``)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config, set_alpha_to_one=False)


def load_sd_task(path: str | Path, prompts: list[str], *, reward: ImageReward | None = None,
                 labeller: Labeller | None = None, lora_rank: int = 4) -> DiffusionTask:
    """A task on the pipeline in ``path`` over ``prompts`` (prompt ids index this list)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    folder = Path(path)
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / sub).is_dir()]
    if missing:
        raise AlignkitError(f"{folder}: not a Stable Diffusion pipeline folder (missing {', '.join(missing)}/); "
                            "give a folder written by StableDiffusionPipeline.save_pretrained")
    if not prompts:
        raise AlignkitError("prompts: give at least one prompt")
    unet = add_unet_lora(UNet2DConditionModel.from_pretrained(folder / "unet"), lora_rank)
    vae = AutoencoderKL.from_pretrained(folder / "vae").requires_grad_(False).eval()
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").requires_grad_(False).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    from diffusers import DDIMScheduler

    scheduler = ddim_for(DDIMScheduler.load_config(folder / "scheduler"))
    table = encode_prompts(tokenizer, text_encoder, prompts)  # [P, L, E]
    return DiffusionTask(sd_policy(unet, vae, scheduler), len(prompts), condition=lambda ids: table[ids],
                         reward=reward, labeller=labeller)
