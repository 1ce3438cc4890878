"""Accelerate set-up for a :class:`~alignkit.train.runtime.Run`: the accelerator, the optimizer and its
schedule, what FSDP and DeepSpeed need before ``prepare``, and the gathered weights of a sharded model."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from alignkit.config import TrainConfig


def make_accelerator(cfg: TrainConfig):
    """The run's Accelerator; launched processes without a GPU run data-parallel on CPU (gloo).

    ``accelerate launch --multi_gpu`` (or ``configs/accelerate/cpu_2proc.yaml``) starts the processes
    with torchrun; on a machine without CUDA they would otherwise each train alone.
    """
    import os

    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from alignkit.errors import AlignkitError

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=cfg.output_dir,
        cpu=launched > 1 and not _has_gpu(),
        # the schedule counts optimizer steps of the global batch; by default Accelerate would
        # step it once per process at each optimizer step
        step_scheduler_with_optimizer=False,
    )
    if accelerator.num_processes != launched:
        raise AlignkitError(
            f"{launched} processes were launched but Accelerate sees {accelerator.num_processes}; "
            "launch with `accelerate launch --config_file configs/accelerate/<ddp|fsdp|...>.yaml`"
        )
    set_seed(cfg.seed)
    if accelerator.device.type == "cpu":
        return_freed_memory()
    if cfg.tracker != "none":
        start_tracker(accelerator, cfg)
    return accelerator


MMAP_THRESHOLD = 128 * 1024
"""Bytes from which glibc serves an allocation with its own ``mmap`` (returned to the system when freed)."""


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (its default start) so that freed activations
    go back to the system; True when set. By default glibc raises the threshold to the size of every
    freed mmapped block (up to 32 MB), after which a training step's activations and gradients come
    from the heap, whose freed holes the process keeps: on a 6-layer SmolLM2-shaped model that was
    190 MB more peak RSS after three steps. Linux/glibc only; ``MALLOC_MMAP_THRESHOLD_`` set by the
    user wins. Allocation itself is unchanged, so are the results."""
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not ctypes.util.find_library("c"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_tracker(name: str) -> None:
    """A clear error, before any work, when the package of ``train.tracker`` is not installed."""
    import importlib.util

    from alignkit.errors import ConfigError

    package = TRACKER_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"train.tracker: {name} needs the {package} package, which is not installed; "
                          f"`pip install {package}` (or `pip install 'alignkit[tracking]'`), or set train.tracker: none")


def start_tracker(accelerator, cfg: TrainConfig) -> None:
    """Accelerate's tracker for ``cfg.tracker``, with the train settings as its hyper-parameters.

    TensorBoard writes to ``output_dir/tensorboard``; W&B to the project ``alignkit``, the run named
    after ``output_dir`` (``WANDB_MODE=offline`` keeps it on disk, in ``output_dir/wandb``)."""
    import dataclasses
    from pathlib import Path

    check_tracker(cfg.tracker)
    hparams = {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool))}
    out = Path(cfg.output_dir)
    if cfg.tracker == "tensorboard":
        accelerator.init_trackers("tensorboard", config=hparams)
    else:
        out.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers("alignkit", config=hparams,
                                  init_kwargs={"wandb": {"name": out.resolve().name, "dir": str(out)}})


def _has_gpu() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


def schedule_factor(step: int, *, kind: str, warmup: int, total: int) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based).

    Warm-up: step ``s < warmup`` runs at ``(s + 1) / warmup``, so the first step already learns
    (``lr / warmup``) and step ``warmup - 1`` runs at the full rate. ``transformers``' schedules
    give ``s / warmup``, so their first step runs at lr 0 and only moves Adam's moments
    (reported as a bug in transformers#34754 and torchtune#2010; torchtitan#1261 shifts it by one
    the same way). After warm-up, as ``transformers``: constant 1; linear ``1 - p``; cosine
    ``(1 + cos(pi p)) / 2``, with ``p = (s - warmup) / (total - warmup)``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(module: nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW over the trainable parameters and the schedule of ``cfg.schedule`` over ``total_steps``
    (:func:`schedule_factor`)."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas),
        fused=fused_adamw_supported(params) or None,
    )
    factor = partial(schedule_factor, kind=cfg.schedule, warmup=cfg.warmup_steps, total=total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fused_adamw_supported(params: list[torch.Tensor]) -> bool:
    """Whether AdamW can run fused (one kernel pass over each parameter's weight, gradient and two
    moments): floating parameters on CPU or CUDA. Same update as the default ``foreach`` kernel (to
    float rounding), but the default makes about ten passes over all parameters and allocates
    parameter-sized temporaries (``exp_avg_sq.sqrt()``: 0.5 GB on a 135M-parameter model); on a
    2-core CPU the fused step of SmolLM2-135M is about 8x faster (``benchmarks/README.md``)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def full_state_dict(accelerator, module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict of the unwrapped ``module`` when its weights are sharded (FSDP, ZeRO-3),
    gathered with every process taking part (complete on the main process); ``None`` otherwise,
    when every process already holds all the weights."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    return accelerator.get_state_dict(module) if sharded else None


def prepare_for_sharding(accelerator, cfg: TrainConfig, module: nn.Module) -> None:
    """What FSDP and DeepSpeed need before ``accelerator.prepare``, taken from the alignkit config.

    1. FSDP's transformer-based auto-wrap looks for ``_no_split_modules`` on the prepared module;
       the scorer wrapping the LM borrows the LM's (e.g. ``["LlamaDecoderLayer"]``).
    2. DeepSpeed sizes its batch from the config: micro-batch = ``batch_size``, accumulation =
       ``grad_accum`` (its backward divides the loss by it, which :func:`optimizer_step` undoes),
       clipping = ``max_grad_norm``. No dataloader is prepared, so "auto" could not be filled otherwise.
    3. ZeRO-3 gathers a module's partitioned weights when that module's forward starts; the engine
       reads the LM head's weight directly (it never calls the head's forward), so each
       :class:`~alignkit.engine.SequenceScorer` declares the weight as its own external parameter,
       also for forwards outside the DeepSpeed engine (sampling, evaluation).
    """
    from accelerate.utils import DistributedType

    from alignkit.engine.logprobs import unwrap_causal_lm

    if accelerator.distributed_type == DistributedType.FSDP and not hasattr(module, "_no_split_modules"):
        module._no_split_modules = list(getattr(unwrap_causal_lm(module), "_no_split_modules", None) or [])
    if is_deepspeed(accelerator):
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
        ds["gradient_accumulation_steps"] = cfg.grad_accum
        ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
        ds["gradient_clipping"] = cfg.max_grad_norm
        if accelerator.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed  # deepspeed.zero is an attribute, not an importable submodule

            from alignkit.engine import SequenceScorer

            for scorer in [m for m in module.modules() if isinstance(m, SequenceScorer)]:
                head = unwrap_causal_lm(scorer.lm).get_output_embeddings().weight
                deepspeed.zero.register_external_parameter(scorer, head)


def enable_gradient_checkpointing(module: nn.Module) -> None:
    from alignkit.engine.logprobs import unwrap_causal_lm

    for sub in module.modules():
        lm = unwrap_causal_lm(sub)
        if hasattr(lm, "gradient_checkpointing_enable"):
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
