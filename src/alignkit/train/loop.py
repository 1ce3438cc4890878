"""One small training loop on Accelerate, shared by every offline method.

A method supplies the trainable module and two functions (see :class:`Method`);
the loop owns everything else: device placement, mixed precision, data order,
gradient accumulation, clipping, the schedule, metrics, evaluation, checkpoints
and resume. Data order is ``permutation(seed, epoch)`` cut into global batches of
``batch_size x grad_accum x world_size`` examples; each process takes its own
slice of every global batch, so no example is duplicated or lost and the position
in the data is the optimizer step alone.

Losses are reduced once (:func:`alignkit.losses.global_mean`): every micro-batch
contributes ``sum(losses) / units_in_global_batch``, so the gradient does not
depend on how the global batch is split across accumulation steps or processes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from alignkit.config import TrainConfig
from alignkit.losses.reduce import global_mean
from alignkit.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint


class Method(Protocol):
    """What a method gives the loop."""

    def units(self, examples: Sequence[Any]) -> float:
        """The count the loss is averaged over (prompts, or tokens for SFT)."""

    def loss(self, module: nn.Module, examples: Sequence[Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of per-unit losses of a micro-batch, and its metrics (means over the micro-batch)."""


@dataclass
class LoopResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.tracker == "none" else cfg.tracker,
        project_dir=cfg.output_dir,
    )
    set_seed(cfg.seed)
    return accelerator


def make_optimizer(module: nn.Module, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas)
    )
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)
    return optimizer, scheduler


def global_batch_indices(n: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based): epochs are seeded permutations."""
    steps_per_epoch = max(n // global_batch, 1) if n >= global_batch else 1
    epoch, offset = divmod(step, steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return order[offset * global_batch : (offset + 1) * global_batch]


def total_steps(cfg: TrainConfig, n_examples: int, world_size: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    global_batch = cfg.batch_size * cfg.grad_accum * world_size
    return max(1, math.ceil(cfg.num_epochs * max(n_examples // global_batch, 1)))


class MetricsLog:
    """JSON lines in ``output_dir/metrics.jsonl`` plus Accelerate trackers, main process only."""

    def __init__(self, accelerator, output_dir: Path, resume_step: int = 0):
        """Start a new log, or on resume keep the records up to the checkpoint's step."""
        self.accelerator = accelerator
        self.path = Path(output_dir) / "metrics.jsonl"
        if accelerator.is_main_process:
            kept = []
            if resume_step and self.path.is_file():
                lines = self.path.read_text().splitlines()
                kept = [x for x in lines if x.strip() and json.loads(x).get("step", 0) <= resume_step]
            self.path.write_text("".join(x + "\n" for x in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        step = record.get("step")
        self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)


def _reduce_metrics(accelerator, sums: dict[str, float], weight: float) -> dict[str, float]:
    """Unit-weighted mean of each metric over micro-batches and processes."""
    if not sums:
        return {}
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [weight], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum") if accelerator.num_processes > 1 else t
    return {k: float(v / max(t[-1].item(), 1e-12)) for k, v in zip(keys, t[:-1].tolist())}


def train_loop(
    cfg: TrainConfig,
    method: Method,
    module: nn.Module,
    train_examples: Sequence[Any],
    *,
    accelerator=None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_save: Callable[[nn.Module, Path], None] | None = None,
    desc: str = "train",
) -> LoopResult:
    """Train ``module`` on ``train_examples`` with ``method``; returns the last step and metric history."""
    accelerator = accelerator or make_accelerator(cfg)
    output_dir = Path(cfg.output_dir)
    world = accelerator.num_processes
    micro, accum = cfg.batch_size, cfg.grad_accum
    steps = total_steps(cfg, len(train_examples), world)
    optimizer, scheduler = make_optimizer(module, cfg, steps)
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    if cfg.gradient_checkpointing:
        _enable_gradient_checkpointing(module)

    start = 0
    checkpoints = list_checkpoints(output_dir) if cfg.resume else []
    if checkpoints:
        start = load_checkpoint(accelerator, checkpoints[-1])["step"]
        accelerator.print(f"resuming from {checkpoints[-1]} (step {start})")
    log = MetricsLog(accelerator, output_dir, resume_step=start)
    result = LoopResult(step=start)
    bar = _progress(cfg, accelerator, steps, start, desc)
    module.train()
    global_batch = micro * accum * world
    for step in range(start, steps):
        t0 = time.perf_counter()
        indices = global_batch_indices(len(train_examples), global_batch, step, cfg.seed)
        batch = [train_examples[i] for i in indices]
        units = method.units(batch)
        mine = batch[accelerator.process_index :: world]
        micro_batches = [mine[i : i + micro] for i in range(0, len(mine), micro)] or [[]]
        sums: dict[str, float] = {}
        my_units = 0.0
        for i, mb in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            with nullcontext() if sync else accelerator.no_sync(module):
                with accelerator.autocast():
                    loss_sum, metrics = method.loss(module, mb)
                accelerator.backward(global_mean(loss_sum, units, world))
            w = method.units(mb)
            my_units += w
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * w
        if cfg.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
            sums["grad_norm"] = float(grad_norm) * my_units
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, **_reduce_metrics(accelerator, sums, my_units)}
        record["lr"] = scheduler.get_last_lr()[0]
        record["step_time"] = time.perf_counter() - t0
        if evaluate is not None and cfg.eval_every > 0 and (step + 1) % cfg.eval_every == 0:
            record.update({f"eval/{k}": v for k, v in evaluate(module).items()})
            module.train()
        if (step + 1) % max(cfg.log_every, 1) == 0 or step + 1 == steps:
            log.write(record)
        result.history.append(record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "rewards/accuracy", "nll")})
        if cfg.save_every > 0 and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_checkpoint(accelerator, output_dir, step + 1, {"total_steps": steps}, cfg.keep_checkpoints)
        result.step = step + 1
    bar.close()
    if evaluate is not None:
        final_eval = {f"eval/{k}": v for k, v in evaluate(module).items()}
        log.write({"step": result.step, **final_eval})
        if result.history:
            result.history[-1].update(final_eval)
    accelerator.wait_for_everyone()
    if on_save is not None and accelerator.is_main_process:
        on_save(accelerator.unwrap_model(module), output_dir / "final")
    accelerator.wait_for_everyone()
    return result


def _progress(cfg: TrainConfig, accelerator, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not (cfg.progress and accelerator.is_main_process),
                dynamic_ncols=True)


def _enable_gradient_checkpointing(module: nn.Module) -> None:
    from alignkit.engine.logprobs import unwrap_causal_lm

    for sub in module.modules():
        lm = unwrap_causal_lm(sub)
        if hasattr(lm, "gradient_checkpointing_enable"):
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
