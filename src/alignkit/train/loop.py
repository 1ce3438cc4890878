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
process (FSDP, ZeRO-3) and saved by the main one. All of that machinery is the
:class:`~alignkit.train.runtime.Run`; this module is the step of these methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from alignkit.config import TrainConfig
from alignkit.distributed import shard
from alignkit.losses.reduce import global_mean
from alignkit.train.runtime import MetricSums, Run, SaveFn, global_batch_indices, total_steps


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


def train_loop(
    cfg: TrainConfig,
    method: Method,
    module: nn.Module,
    train_examples: Sequence[Any],
    *,
    accelerator=None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_examples: Sequence[Any] | None = None,
    on_save: SaveFn | None = None,
    desc: str = "train",
) -> LoopResult:
    """Train ``module`` on ``train_examples`` with ``method``; returns the last step and metric history.

    Evaluation: ``eval_examples`` are split across processes and scored with ``method.loss``
    (:func:`evaluate_sharded`); ``evaluate(module)``, if given instead, runs whole on every process.
    ``on_save(module, out_dir, state_dict)`` runs on the main process; ``state_dict`` is ``None``
    unless the weights are sharded (FSDP, ZeRO-3): then it is the gathered full state dict of
    ``module`` (its keys as in ``module.state_dict()``), which it must save instead of the
    module's own (partial) weights.
    """
    run = Run(cfg, accelerator, desc=desc)
    world, micro = run.world, cfg.batch_size

    def run_eval() -> dict[str, float]:
        out = (evaluate_sharded(run.accelerator, method, run.module, eval_examples, micro) if eval_examples
               else evaluate(run.module))
        run.module.train()
        return out

    run.evaluate = run_eval if eval_examples or evaluate is not None else None
    module = run.prepare(module, total_steps(cfg, len(train_examples), world))
    global_batch = micro * cfg.grad_accum * world
    steps_per_epoch = max(len(train_examples) // global_batch, 1)

    def batch_at(step: int) -> list:
        return [train_examples[i] for i in global_batch_indices(len(train_examples), global_batch, step, cfg.seed)]

    seen_tokens = None
    for step in run.steps():
        if seen_tokens is None:  # on resume, the tokens of the steps already done
            seen_tokens = sum(sequence_tokens(batch_at(s)) or 0 for s in range(step))
        batch = batch_at(step)
        units = method.units(batch)
        mine = batch[run.rank :: world]
        # the same number of micro-batches on every process, even when a short batch leaves some empty
        n_micro = max(1, math.ceil(math.ceil(len(batch) / world) / micro))

        metrics = run.optimizer_step([
            _micro_batch(run.accelerator, method, module, mine[i * micro : (i + 1) * micro], batch[:1], units, world)
            for i in range(n_micro)
        ])
        record = {"step": step + 1, **metrics.reduced(run.accelerator),
                  "learning_rate": run.scheduler.get_last_lr()[0], "epoch": (step + 1) / steps_per_epoch}
        tokens = sequence_tokens(batch)  # of the global batch: the same on every process
        if tokens is not None:
            seen_tokens += tokens
            record["num_tokens"] = seen_tokens
            record["step_time"] = run.step_seconds()
            record["tokens_per_second"] = tokens / max(record["step_time"], 1e-9)
        run.end_step(record, show=("loss", "rewards/accuracies", "nll"))
    run.finish(on_save)
    return LoopResult(step=run.step, history=run.history)


def _micro_batch(accelerator, method: Method, module: nn.Module, examples: Sequence[Any], stand_in: Sequence[Any],
                 units: float, world: int):
    """One forward of the loop's optimizer step: ``examples``' loss as a share of the global batch's
    ``units``. An empty share (a short last batch) runs ``stand_in`` with weight 0, so that every process
    runs the same forwards; every metric key is reported on every process, or the reduction mismatches."""
    def forward():
        weight = 1.0 if examples else 0.0
        with accelerator.autocast():
            loss_sum, metrics = method.loss(module, examples or stand_in)
        return global_mean(loss_sum * weight, units, world), metrics, method.units(examples) if examples else 0.0

    return forward


def sequence_tokens(examples: Sequence[Any]) -> int | None:
    """Tokens of every prompt + response sequence of ``examples`` (a prompt counts once per response,
    as TRL's ``num_tokens`` counts the input tokens), or None for examples that are not tokenized."""
    if not examples or not hasattr(examples[0], "prompt_ids"):
        return None
    return sum(len(ex.prompt_ids) * len(ex.response_ids) + sum(map(len, ex.response_ids)) for ex in examples)


@torch.no_grad()
def evaluate_sharded(accelerator, method: Method, module: nn.Module, examples: Sequence[Any],
                     batch_size: int) -> dict[str, float]:
    """Unit-weighted means of ``method.loss`` metrics over ``examples``, each process scoring its shard.

    Every process runs ``ceil(ceil(n / world) / batch_size)`` forwards (a short shard repeats an
    example with weight 0), so FSDP and ZeRO-3 stay in step. ``perplexity`` is ``exp(nll)`` of the
    reduced per-token ``nll``, when the method reports one.
    """
    world = accelerator.num_processes
    mine = shard(examples, accelerator.process_index, world)
    n_batches = math.ceil(math.ceil(len(examples) / world) / batch_size)
    module.eval()
    sums = MetricSums()
    for i in range(n_batches):
        chunk = mine[i * batch_size : (i + 1) * batch_size]
        with accelerator.autocast():
            _, metrics = method.loss(module, chunk or list(examples[:1]))
        sums.add(metrics, method.units(chunk) if chunk else 0.0)
    out = sums.reduced(accelerator)
    if "nll" in out:
        out["perplexity"] = math.exp(min(out["nll"], 50.0))
    return out
