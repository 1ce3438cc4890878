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

Under ``accelerate launch`` the same code runs with DDP, FSDP or DeepSpeed ZeRO
(``configs/accelerate/``). Every process runs the same number of forward passes
per step and per evaluation (a process whose share of a short last batch is
empty runs a zero-weight micro-batch), because FSDP and ZeRO-3 gather weights
collectively in each forward. Evaluation is sharded and its metrics reduced;
checkpoints are written once and resume on any number of processes (see
:mod:`alignkit.train.checkpoint`); the final weights are gathered on every
process (FSDP, ZeRO-3) and saved by the main one.
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
from alignkit.train.distributed import shard


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
    return accelerator


def _has_gpu() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu is not None and xpu.is_available())


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


def used_examples(cfg: TrainConfig, examples: Sequence[Any], world_size: int) -> list[Any]:
    """The examples that :func:`train_loop`'s steps will draw (in first-use order, once each), so that
    what is prepared before training (a precomputed reference) scales with ``max_steps``, not the data."""
    global_batch = cfg.batch_size * cfg.grad_accum * world_size
    seen: dict[int, None] = {}
    for step in range(total_steps(cfg, len(examples), world_size)):
        seen.update(dict.fromkeys(global_batch_indices(len(examples), global_batch, step, cfg.seed)))
        if len(seen) == len(examples):
            break
    return [examples[i] for i in seen]


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
    eval_examples: Sequence[Any] | None = None,
    on_save: Callable[..., None] | None = None,
    desc: str = "train",
) -> LoopResult:
    """Train ``module`` on ``train_examples`` with ``method``; returns the last step and metric history.

    Evaluation: ``eval_examples`` are split across processes and scored with ``method.loss``
    (:func:`evaluate_sharded`); ``evaluate(module)``, if given instead, runs whole on every process.
    ``on_save(module, out_dir)`` runs on the main process; when the weights are sharded (FSDP,
    ZeRO-3) it is called as ``on_save(module, out_dir, state_dict)`` with the gathered full state
    dict of ``module`` (its keys as in ``module.state_dict()``), which it must save instead of the
    module's own (partial) weights.
    """
    accelerator = accelerator or make_accelerator(cfg)
    output_dir = Path(cfg.output_dir)
    world = accelerator.num_processes
    micro, accum = cfg.batch_size, cfg.grad_accum
    steps = total_steps(cfg, len(train_examples), world)
    _prepare_for_sharding(accelerator, cfg, module)
    optimizer, scheduler = make_optimizer(module, cfg, steps)
    module, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    deepspeed = _is_deepspeed(accelerator)
    loss_scale = float(accum) if deepspeed else float(accelerator.gradient_accumulation_steps)
    if cfg.gradient_checkpointing:
        _enable_gradient_checkpointing(module)

    start = 0
    checkpoints = list_checkpoints(output_dir) if cfg.resume else []
    if checkpoints:
        start = load_checkpoint(accelerator, checkpoints[-1])["step"]
        accelerator.print(f"resuming from {checkpoints[-1]} (step {start})")
    log = MetricsLog(accelerator, output_dir, resume_step=start)
    result = LoopResult(step=start)

    def run_eval() -> dict[str, float]:
        if eval_examples:
            out = evaluate_sharded(accelerator, method, module, eval_examples, micro)
        elif evaluate is not None:
            out = evaluate(module)
        else:
            return {}
        module.train()
        return {f"eval/{k}": v for k, v in out.items()}

    bar = _progress(cfg, accelerator, steps, start, desc)
    module.train()
    global_batch = micro * accum * world
    for step in range(start, steps):
        t0 = time.perf_counter()
        indices = global_batch_indices(len(train_examples), global_batch, step, cfg.seed)
        batch = [train_examples[i] for i in indices]
        units = method.units(batch)
        mine = batch[accelerator.process_index :: world]
        # the same number of micro-batches on every process, even when a short batch leaves some empty
        n_micro = max(1, math.ceil(math.ceil(len(batch) / world) / micro))
        sums: dict[str, float] = {}
        my_units = 0.0
        for i in range(n_micro):
            mb = mine[i * micro : (i + 1) * micro]
            weight = 1.0 if mb else 0.0  # an empty share runs a real example with zero weight
            sync = i == n_micro - 1
            if deepspeed:  # DeepSpeed reduces gradients and steps at the boundary it is told of
                accelerator.gradient_state._set_sync_gradients(sync)
            with nullcontext() if sync else accelerator.no_sync(module):
                with accelerator.autocast():
                    loss_sum, metrics = method.loss(module, mb or batch[:1])
                accelerator.backward(global_mean(loss_sum * weight, units, world) * loss_scale)
            w = method.units(mb) if mb else 0.0
            my_units += w
            for k, v in metrics.items():  # every key on every process, or the reduce below mismatches
                sums[k] = sums.get(k, 0.0) + (float(v) * w if w else 0.0)
        if deepspeed:
            accelerator.gradient_state._set_sync_gradients(True)
        if cfg.max_grad_norm > 0:  # DeepSpeed clipped inside its step and reports the norm (or None)
            grad_norm = accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
            if grad_norm is not None:
                sums["grad_norm"] = float(grad_norm) * my_units
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, **_reduce_metrics(accelerator, sums, my_units)}
        record["lr"] = scheduler.get_last_lr()[0]
        record["step_time"] = time.perf_counter() - t0
        if cfg.eval_every > 0 and (step + 1) % cfg.eval_every == 0:
            record.update(run_eval())
        if (step + 1) % max(cfg.log_every, 1) == 0 or step + 1 == steps:
            log.write(record)
        result.history.append(record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "rewards/accuracy", "nll")})
        if cfg.save_every > 0 and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_checkpoint(accelerator, output_dir, step + 1, {"total_steps": steps}, cfg.keep_checkpoints)
        result.step = step + 1
    bar.close()
    final_eval = run_eval()
    if final_eval:
        log.write({"step": result.step, **final_eval})
        if result.history:
            result.history[-1].update(final_eval)
    accelerator.wait_for_everyone()
    if on_save is not None:
        state_dict = full_state_dict(accelerator, module)  # a collective: every process calls it
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(module)
            if state_dict is None:
                on_save(unwrapped, output_dir / "final")
            else:
                on_save(unwrapped, output_dir / "final", state_dict)
    accelerator.wait_for_everyone()
    return result


@torch.no_grad()
def evaluate_sharded(accelerator, method: Method, module: nn.Module, examples: Sequence[Any],
                     batch_size: int) -> dict[str, float]:
    """Unit-weighted means of ``method.loss`` metrics over ``examples``, each process scoring its shard.

    Every process runs ``ceil(ceil(n / world) / batch_size)`` forwards (a short shard repeats an
    example with weight 0), so FSDP and ZeRO-3 stay in step. ``perplexity`` is ``exp(nll)`` of the
    reduced per-token ``nll``, when the method reports one.
    """
    from tqdm.auto import tqdm

    world = accelerator.num_processes
    mine = shard(examples, accelerator.process_index, world)
    n_batches = math.ceil(math.ceil(len(examples) / world) / batch_size)
    module.eval()
    sums: dict[str, float] = {}
    units = 0.0
    for i in tqdm(range(n_batches), desc="evaluate", delay=2.0, disable=not accelerator.is_main_process, leave=False):
        chunk = mine[i * batch_size : (i + 1) * batch_size]
        with accelerator.autocast():
            _, metrics = method.loss(module, chunk or list(examples[:1]))
        w = method.units(chunk) if chunk else 0.0
        units += w
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * w
    out = _reduce_metrics(accelerator, sums, units)
    if "nll" in out:
        out["perplexity"] = math.exp(min(out["nll"], 50.0))
    return out


def full_state_dict(accelerator, module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole state dict of the unwrapped ``module`` when its weights are sharded (FSDP, ZeRO-3),
    gathered with every process taking part (complete on the main process); ``None`` otherwise,
    when every process already holds all the weights."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        _is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    return accelerator.get_state_dict(module) if sharded else None


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _prepare_for_sharding(accelerator, cfg: TrainConfig, module: nn.Module) -> None:
    """What FSDP and DeepSpeed need before ``accelerator.prepare``, taken from the alignkit config.

    1. FSDP's transformer-based auto-wrap looks for ``_no_split_modules`` on the prepared module;
       the scorer wrapping the LM borrows the LM's (e.g. ``["LlamaDecoderLayer"]``).
    2. DeepSpeed sizes its batch from the config: micro-batch = ``batch_size``, accumulation =
       ``grad_accum`` (its backward divides the loss by it, which the loop undoes), clipping =
       ``max_grad_norm``. No dataloader is prepared, so "auto" could not be filled otherwise.
    3. ZeRO-3 gathers a module's partitioned weights when that module's forward starts; the engine
       reads the LM head's weight directly (it never calls the head's forward), so each
       :class:`~alignkit.engine.SequenceScorer` declares the weight as its own external parameter,
       also for forwards outside the DeepSpeed engine (sampling, evaluation).
    """
    from accelerate.utils import DistributedType

    from alignkit.engine.logprobs import unwrap_causal_lm

    if accelerator.distributed_type == DistributedType.FSDP and not hasattr(module, "_no_split_modules"):
        module._no_split_modules = list(getattr(unwrap_causal_lm(module), "_no_split_modules", None) or [])
    if _is_deepspeed(accelerator):
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
