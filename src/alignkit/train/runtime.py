"""The run runtime: what every trainer shares, so that a trainer is only its step.

A :class:`Run` owns the accelerator (device placement, mixed precision, DDP / FSDP /
DeepSpeed), the optimizer and its schedule, the metrics log, the progress bar,
checkpoints (with extra state a trainer registers through :meth:`Run.track`), the step
loop (:meth:`Run.steps`), periodic evaluation and the final save. Its
:meth:`Run.optimizer_step` (a thin wrapper of :func:`optimizer_step`) owns one optimizer
step: gradient accumulation over micro-batches, DeepSpeed's accumulation boundaries,
clipping, stepping and the metric sums. The preference / SFT / reward-model loop
(:mod:`alignkit.train.loop`), the PPO family (:mod:`alignkit.train.ppo`) and the sampling
stages (:mod:`alignkit.train.sampling`) all run on it::

    run = Run(cfg.train, desc="ppo")
    module = run.prepare(module, total_steps)        # optimizer, schedule, accelerate.prepare
    run.track("kl_ctl", kl_controller)               # saved in every checkpoint, restored on resume
    for step in run.steps():                         # resumes, logs, shows progress, checkpoints
        metrics = run.optimizer_step([lambda: (loss, {"loss": ...}, weight), ...])
        run.end_step({"step": step + 1, **metrics.reduced(run.accelerator)})
    run.finish(save)                                 # final evaluation and the final weights

Checkpoints are written and read here only (:meth:`Run.save_checkpoint`, the resume at
the start of :meth:`Run.steps`), through the atomic, checksummed folders of
:mod:`alignkit.train.checkpoint` (a damaged checkpoint is skipped for the one before).
The run's :class:`~alignkit.train.guard.StepGuard` vets every optimizer step (a
non-finite loss or gradient norm is never applied), refuses to save non-finite weights,
and turns SIGTERM / SIGUSR1 into a checkpoint at the step boundary and an exit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from alignkit.config import TrainConfig
from alignkit.train.accelerator import (
    enable_gradient_checkpointing,
    full_state_dict,
    is_deepspeed,
    make_accelerator,
    make_optimizer,
    prepare_for_sharding,
)
from alignkit.train.checkpoint import atomic_dir, load_latest_checkpoint, save_checkpoint
from alignkit.train.guard import StepGuard, check_finite_weights

# A micro-batch of an optimizer step: runs the forward and returns the loss to backpropagate (already
# normalised by the global batch, see alignkit.losses.global_mean), its metrics and their weight.
MicroBatch = Callable[[], tuple[torch.Tensor, dict[str, Any], float]]
# The final save: (unwrapped module, folder, the gathered full state dict under FSDP / ZeRO-3 or None).
SaveFn = Callable[[nn.Module, Path, "dict[str, torch.Tensor] | None"], None]


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# ---------------------------------------------------------------- building blocks


def global_batch_indices(n: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based): epochs are seeded permutations."""
    steps_per_epoch = max(n // global_batch, 1) if n >= global_batch else 1
    epoch, offset = divmod(step, steps_per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return order[offset * global_batch : (offset + 1) * global_batch]


def used_indices(cfg: TrainConfig, n: int, world_size: int, batches_per_step: int = 1) -> list[int]:
    """Indices of the rows that :func:`~alignkit.train.loop.train_loop`'s steps draw from ``n`` rows, in
    first-use order, once each, so that what is prepared before training (tokenization, a precomputed
    reference) scales with ``max_steps``, not the data. A step draws global batches of ``batch_size x
    grad_accum x batches_per_step x world_size`` rows (PPO: ``batches_per_step = num_minibatches``)."""
    global_batch = cfg.batch_size * cfg.grad_accum * batches_per_step * world_size
    seen: dict[int, None] = {}
    for step in range(total_steps(cfg, n, world_size, batches_per_step)):
        seen.update(dict.fromkeys(global_batch_indices(n, global_batch, step, cfg.seed)))
        if len(seen) == n:
            break
    return list(seen)


def used_examples(cfg: TrainConfig, examples: Sequence[Any], world_size: int) -> list[Any]:
    """The examples at :func:`used_indices`, in first-use order."""
    return [examples[i] for i in used_indices(cfg, len(examples), world_size)]


def total_steps(cfg: TrainConfig, n_examples: int, world_size: int, batches_per_step: int = 1) -> int:
    """``train.max_steps``, or ``num_epochs`` passes over ``n_examples`` in global batches of
    ``batch_size x grad_accum x batches_per_step x world_size``."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    global_batch = cfg.batch_size * cfg.grad_accum * batches_per_step * world_size
    return max(1, math.ceil(cfg.num_epochs * max(n_examples // global_batch, 1)))


def save_final(accelerator, module: nn.Module, out_dir: Path, save: SaveFn) -> None:
    """``save(unwrapped module, out_dir, gathered state dict or None)`` on the main process, the weights
    gathered first when FSDP / ZeRO-3 shards them (a collective: every process calls this)."""
    accelerator.wait_for_everyone()
    check_finite_weights(accelerator, module, out_dir)
    state_dict = full_state_dict(accelerator, module)
    if accelerator.is_main_process:
        with atomic_dir(Path(out_dir)) as tmp:  # fsynced, then renamed: never half-written
            save(accelerator.unwrap_model(module), tmp, state_dict)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------- metrics


class MetricSums:
    """Weighted values of each metric, added micro-batch by micro-batch, in order.

    ``local_means`` are this process's weighted means; ``reduced`` the weighted means over every
    process (a collective). A value with weight 0 counts as 0 (a zero-weight micro-batch's metrics
    may be NaN). ``values(key)`` are the raw values, e.g. the approximate KL of the last step.
    """

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[float, float]]] = {}

    def add(self, metrics: dict[str, Any], weight: float = 1.0) -> None:
        for k, v in metrics.items():
            self.entries.setdefault(k, []).append((float(v.detach() if isinstance(v, torch.Tensor) else v), weight))

    def merge(self, other: MetricSums) -> None:
        for k, entries in other.entries.items():
            self.entries.setdefault(k, []).extend(entries)

    def values(self, key: str) -> list[float]:
        return [v for v, _ in self.entries.get(key, [])]

    def _sums(self) -> dict[str, tuple[float, float]]:
        out = {}
        for k, entries in self.entries.items():
            total, weight = 0.0, 0.0
            for v, w in entries:
                total, weight = total + (v * w if w else 0.0), weight + w
            out[k] = (total, weight)
        return out

    def local_means(self) -> dict[str, float]:
        return {k: total / weight for k, (total, weight) in self._sums().items()}

    def reduced(self, accelerator) -> dict[str, float]:
        """Weighted mean of each metric over micro-batches and processes (every key on every process)."""
        sums = self._sums()
        if not sums:
            return {}
        keys = sorted(sums)
        t = torch.tensor([sums[k][0] for k in keys] + [sums[k][1] for k in keys], dtype=torch.float64,
                         device=accelerator.device)
        t = accelerator.reduce(t, reduction="sum") if accelerator.num_processes > 1 else t
        n = len(keys)
        return {k: float(t[i] / max(t[n + i].item(), 1e-12)) for i, k in enumerate(keys)}


def mean_over_processes(accelerator, metrics: dict[str, Any]) -> dict[str, float]:
    """Each metric's plain mean over processes (float64; the identity on one process)."""
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


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
        if self.accelerator.trackers:
            self.accelerator.log(tracker_scalars(record), step=record.get("step"))
            for tracker in self.accelerator.trackers:  # TensorBoard buffers for minutes otherwise
                flush = getattr(getattr(tracker, "writer", None), "flush", None)
                if callable(flush):
                    flush()


def tracker_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics record as the trackers get it, named as transformers' TensorBoard and W&B callbacks
    name TRL's metrics: ``train/<name>`` for training metrics, ``eval/<name>`` as it is."""
    return {(k if k.startswith(("eval/", "train/")) else f"train/{k}"): v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- one optimizer step


def optimizer_step(accelerator, module: nn.Module, optimizer, micro_batches: Sequence[MicroBatch], *,
                   max_grad_norm: float = 0.0, scheduler=None, grad_norm_weight: float | None = None,
                   guard: StepGuard | None = None, step: int = 0) -> MetricSums:
    """Accumulate the gradients of ``micro_batches`` and take one optimizer step; returns their metrics.

    Each micro-batch runs its forward inside the step, so that DDP all-reduces the accumulated
    gradients once, on the last backward (the others run under ``no_sync``), and DeepSpeed is
    told which backward ends its accumulation (it reduces and steps at that boundary). DeepSpeed's
    backward divides every loss by its accumulation steps, which is undone here, so the losses
    are what the caller normalised them to. Then: clipping to ``max_grad_norm`` (DeepSpeed clips
    inside its step and may report no norm), ``optimizer.step()``, ``scheduler.step()`` when
    given, and the gradients dropped. ``grad_norm`` joins the metrics with ``grad_norm_weight``
    (default: the micro-batches' summed weight). ``guard`` vets optimizer step ``step`` (1-based)
    first: a non-finite loss or gradient norm is not applied (skipped or the run stopped).
    """
    deepspeed = is_deepspeed(accelerator)
    if deepspeed:
        scale = float(accelerator.state.deepspeed_plugin.deepspeed_config["gradient_accumulation_steps"])
    else:
        scale = float(accelerator.gradient_accumulation_steps)
    metrics, weight_sum, loss_total = MetricSums(), 0.0, 0.0
    for i, micro_batch in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1  # all-reduce the accumulated gradients on the last backward only
        if deepspeed:
            accelerator.gradient_state._set_sync_gradients(sync)
        with nullcontext() if sync else accelerator.no_sync(module):
            loss, values, weight = micro_batch()
            accelerator.backward(loss * scale)
        loss_total += float(loss.detach()) if weight else 0.0  # a zero-weight micro-batch's loss is 0 anyway
        metrics.add(values, weight)
        weight_sum += weight
    if deepspeed:
        accelerator.gradient_state._set_sync_gradients(True)
    # with max_grad_norm 0 a max norm of inf only measures the norm (DeepSpeed may report none)
    grad_norm = accelerator.clip_grad_norm_(module.parameters(), max_grad_norm or math.inf)
    if max_grad_norm > 0 and grad_norm is not None:
        metrics.add({"grad_norm": grad_norm}, weight_sum if grad_norm_weight is None else grad_norm_weight)
    # under fp16 an overflowing gradient is routine: the loss scaler skips that step itself
    checked_norm = None if grad_norm is None or accelerator.mixed_precision == "fp16" else float(grad_norm)
    if guard is None or guard.check_step(step, loss_total, checked_norm):
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics


# ---------------------------------------------------------------- the run


class Run:
    """One training run on Accelerate: see the module docstring for its life cycle.

    ``evaluate()`` (optional, every process calls it) returns metrics without the ``eval/``
    prefix; it runs every ``train.eval_every`` steps and once at the end (:meth:`finish`).
    """

    def __init__(self, cfg: TrainConfig, accelerator=None, *, desc: str = "train",
                 evaluate: Callable[[], dict[str, float]] | None = None):
        self.cfg, self.desc, self.evaluate = cfg, desc, evaluate
        self.accelerator = accelerator or make_accelerator(cfg)
        self.output_dir = Path(cfg.output_dir)
        self.module: nn.Module | None = None
        self.optimizer = self.scheduler = self.log = self.bar = None
        self.total_steps = self.start_step = self.step = 0
        self.history: list[dict[str, float]] = []
        self._tracked: dict[str, Stateful] = {}
        self._t0 = 0.0
        self.guard = StepGuard(self.accelerator, cfg.max_nonfinite_steps)
        self._running = 0  # the 1-based optimizer step in progress

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    def prepare(self, module: nn.Module, total_steps: int) -> nn.Module:
        """Optimizer and schedule (over ``total_steps`` optimizer steps) for ``module``, everything
        prepared by Accelerate, gradient checkpointing on when asked; returns the prepared module."""
        prepare_for_sharding(self.accelerator, self.cfg, module)
        optimizer, scheduler = make_optimizer(module, self.cfg, total_steps)
        self.module, self.optimizer, self.scheduler = self.accelerator.prepare(module, optimizer, scheduler)
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.module)
        self.total_steps = total_steps
        return self.module

    def track(self, name: str, obj: Stateful) -> None:
        """Save ``obj.state_dict()`` (JSON) in every checkpoint and restore it on resume."""
        self._tracked[name] = obj

    # ------------------------------------------------------------ the step loop

    def steps(self) -> Iterator[int]:
        """The optimizer steps still to run (0-based), after resuming from the last checkpoint when
        ``train.resume``; the caller ends each with :meth:`end_step`."""
        self._resume()
        self.log = MetricsLog(self.accelerator, self.output_dir, resume_step=self.start_step)
        self.step = self.start_step
        self.bar = _progress(self.cfg, self.accelerator, self.total_steps, self.start_step, self.desc)
        self.module.train()
        for step in range(self.start_step, self.total_steps):
            self._t0 = time.perf_counter()
            self._running = step + 1
            yield step
        self.bar.close()

    def optimizer_step(self, micro_batches: Sequence[MicroBatch], *, step_scheduler: bool = True,
                       grad_norm_weight: float | None = None) -> MetricSums:
        """:func:`optimizer_step` with this run's module, optimizer, clipping and (unless told not to) schedule."""
        return optimizer_step(self.accelerator, self.module, self.optimizer, micro_batches,
                              max_grad_norm=self.cfg.max_grad_norm,
                              scheduler=self.scheduler if step_scheduler else None, grad_norm_weight=grad_norm_weight,
                              guard=self.guard, step=self._running)

    def step_seconds(self) -> float:
        """Seconds since the current step began."""
        return time.perf_counter() - self._t0

    def end_step(self, record: dict[str, Any], show: Sequence[str] = ("loss",)) -> None:
        """Finish the step of ``record`` (its ``step`` is 1-based): time, evaluate when due, log when due,
        progress, and a checkpoint every ``train.save_every`` steps (not after the last). After a
        termination signal (``train.save_on_signals``) it saves a checkpoint and raises
        :class:`~alignkit.train.guard.Preempted`."""
        cfg, step = self.cfg, record["step"]
        record.setdefault("step_time", time.perf_counter() - self._t0)
        if self.evaluate is not None and cfg.eval_every > 0 and step % cfg.eval_every == 0:
            record.update(self._eval())
        if step % max(cfg.log_every, 1) == 0 or step == self.total_steps:
            self.log.write(record)
        self.history.append(record)
        self.bar.update(1)
        self.bar.set_postfix({k: f"{record[k]:.4g}" for k in show if k in record})
        saved = None
        if cfg.save_every > 0 and step % cfg.save_every == 0 and step < self.total_steps:
            saved = self.save_checkpoint(step)
        self.step = step
        signum = self.guard.stop_requested() if step < self.total_steps else None
        if signum:
            self.bar.close()
            raise self.guard.preempted(signum, step, saved or self.save_checkpoint(step))

    def finish(self, save: SaveFn | None = None) -> dict[str, float]:
        """The final evaluation (logged at the last step) and ``save`` of the final weights to
        ``output_dir/final`` (see :func:`save_final`); returns the final evaluation's metrics."""
        final_eval = self._eval() if self.evaluate is not None else {}
        if final_eval:
            self.log.write({"step": self.step, **final_eval})
            if self.history:
                self.history[-1].update(final_eval)
        if save is not None:
            save_final(self.accelerator, self.module, self.output_dir / "final", save)
        else:
            self.accelerator.wait_for_everyone()
        return final_eval

    def _eval(self) -> dict[str, float]:
        return {f"eval/{k}": v for k, v in self.evaluate().items()}

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int) -> Path | None:
        """Everything needed to resume after optimizer step ``step`` (see :mod:`alignkit.train.checkpoint`)."""
        self.guard.check_weights(self.module, f"checkpoint step-{step}")
        state = {"total_steps": self.total_steps, **{k: obj.state_dict() for k, obj in self._tracked.items()}}
        return save_checkpoint(self.accelerator, self.output_dir, step, state, self.cfg.keep_checkpoints)

    def _resume(self) -> None:
        loaded = load_latest_checkpoint(self.accelerator, self.output_dir) if self.cfg.resume else None
        if loaded is None:
            return
        path, state = loaded
        self.start_step = state["step"]
        for name, obj in self._tracked.items():
            if name in state:
                obj.load_state_dict(state[name])
            else:  # a checkpoint of an older alignkit (e.g. before PPO counted num_tokens): keep the fresh state
                self.accelerator.print(f"{path}: no saved state of {name!r} (an older checkpoint); it starts afresh")
        self.accelerator.print(f"resuming from {path} (step {self.start_step})")


def _progress(cfg: TrainConfig, accelerator, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not (cfg.progress and accelerator.is_main_process),
                dynamic_ncols=True)
