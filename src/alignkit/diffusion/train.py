"""``alignkit train`` with a diffusion method (``method: ddpo`` ...): the general config mapped onto
:class:`~alignkit.diffusion.trainer.DiffusionTrainConfig`.

- ``model.name_or_path``: ``digits`` (the cached class-conditional digits DDPM, all weights trained)
  or a Stable Diffusion pipeline folder (a LoRA of ``model.lora.r`` / ``alpha`` on its UNet);
- ``data.train``: for a pipeline, a text file of prompts, one per line (digits: the ten digits);
- ``rewards``: ``kind: classifier`` or ``ink`` (digits) or ``kind: function`` with
  ``function: module:fn`` called as ``fn(images [B,3|1,H,W] in [-1,1], prompt_ids [B]) -> [B]``;
  several are mixed by ``weight``. Pair methods use it as a scripted labeller;
- ``train.max_steps`` rounds, ``train.num_epochs`` passes over each round's data (a whole number),
  ``train.batch_size`` examples per step, ``train.learning_rate``, ``train.seed``, ``train.max_grad_norm``; ``sampling.batch_size`` prompts and ``sampling.num_samples``
  samples per prompt each round; ``loss`` the method's hyper-parameters.

The run folder gets ``metrics.jsonl`` (one record per round) and ``final/`` (the UNet, or the LoRA).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

from alignkit.config import Config
from alignkit.diffusion.registry import DIFFUSION_METHODS
from alignkit.errors import ConfigError
from alignkit.train.run import register_trainer


def image_rewards(specs, digit_rewards: dict | None) -> dict:
    """``rewards`` specs -> {display name (``name``, else the kind or function): image reward}, in order."""
    named = {}
    for i, spec in enumerate(specs):
        fn = _image_reward(i, spec, digit_rewards)
        label = spec.name or (spec.function.rpartition(":")[2] if spec.kind == "function" else spec.kind)
        named[label if label not in named else f"{label}_{i}"] = fn
    return named


def _reward(cfg: Config, digit_rewards: dict | None):
    from alignkit.diffusion.digits import mixed_reward

    if not cfg.rewards:
        raise ConfigError("rewards: a diffusion method needs a reward or a labeller; e.g. rewards: [{kind: classifier}]")
    named = {f"r{i}": _image_reward(i, spec, digit_rewards) for i, spec in enumerate(cfg.rewards)}
    return mixed_reward(named, {f"r{i}": s.weight for i, s in enumerate(cfg.rewards)})


def _image_reward(i: int, spec, digit_rewards: dict | None):
    if spec.kind == "function":
        module, _, fn = spec.function.partition(":")
        try:
            return getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError, ValueError):
            raise ConfigError(f"rewards[{i}].function: cannot import {spec.function!r} (write module:function)") from None
    if digit_rewards is not None and spec.kind in digit_rewards:
        return digit_rewards[spec.kind]
    kinds = ", ".join(sorted(digit_rewards or {}) + ["function"])
    raise ConfigError(f"rewards[{i}].kind: {spec.kind!r} is not an image reward; choose one of: {kinds}")


def _task(cfg: Config):
    from alignkit.diffusion.trainer import DiffusionTask, reward_labeller

    if cfg.model.name_or_path == "digits":
        from alignkit.demo.pipeline import cache_root
        from alignkit.diffusion.digits import (
            NUM_CLASSES,
            PretrainConfig,
            cached_digits_unet,
            digit_rewards,
            digits_policy,
        )

        unet, _ = cached_digits_unet(cache_root(SimpleNamespace(cache_dir="")), PretrainConfig(),
                                     progress=cfg.train.progress)
        reward = _reward(cfg, digit_rewards(cfg.train.seed))
        return DiffusionTask(digits_policy(unet.requires_grad_(True)), NUM_CLASSES, reward=reward,
                             labeller=reward_labeller(reward))
    from alignkit.diffusion.stable_diffusion import load_sd_task

    if not cfg.data.train or not Path(cfg.data.train).is_file():
        raise ConfigError(f"data.train: {cfg.data.train!r} is not a file; give a text file of prompts, one per line")
    prompts = [line.strip() for line in Path(cfg.data.train).read_text().splitlines() if line.strip()]
    reward = _reward(cfg, None)
    return load_sd_task(cfg.model.name_or_path, prompts, reward=reward, labeller=reward_labeller(reward),
                        lora_rank=cfg.model.lora.r)


def train_diffusion_method(cfg: Config) -> Path:
    from alignkit.diffusion.trainer import DiffusionTrainConfig, train_diffusion

    if cfg.train.max_steps <= 0:
        raise ConfigError("train.max_steps: set the number of sample-then-train rounds of the diffusion method")
    if not float(cfg.train.num_epochs).is_integer():
        raise ConfigError(f"train.num_epochs: {cfg.train.num_epochs}; a diffusion method makes whole passes over "
                          "each round's data, give a whole number")
    task = _task(cfg)
    train_cfg = DiffusionTrainConfig(method=cfg.method, hparams=dict(cfg.loss), rounds=cfg.train.max_steps,
                                     epochs=int(cfg.train.num_epochs),
                                     prompts_per_round=cfg.sampling.batch_size,
                                     # RAFT's selection, named as for language RAFT: the best of each prompt's
                                     # K, or the top 1/K of all samples
                                     keep="global" if cfg.online.ranking == "global" else "per_prompt",
                                     keep_fraction=1.0 / cfg.sampling.num_samples,
                                     samples_per_prompt=cfg.sampling.num_samples, learning_rate=cfg.train.learning_rate,
                                     num_steps=cfg.sampling.diffusion_steps, eta=cfg.sampling.diffusion_eta,
                                     batch_size=cfg.train.batch_size, max_grad_norm=cfg.train.max_grad_norm,
                                     seed=cfg.train.seed)
    history = train_diffusion(task, train_cfg, progress=cfg.train.progress)
    out = Path(cfg.train.output_dir)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    unet = task.policy.unet
    if getattr(unet, "_hf_peft_config_loaded", False):
        unet.save_lora_adapter(out / "final")
    else:
        unet.save_pretrained(out / "final")
    return out


for _name, _fn in DIFFUSION_METHODS.items():
    # a best-of-K method also reads online.ranking (per prompt or global), as language RAFT does
    register_trainer(_name, family="diffusion", data="prompts",
                     sections=("loss", "rewards", "sampling") + (("online",) if _fn.feedback == "best_of_k" else ())
                     )(train_diffusion_method)
