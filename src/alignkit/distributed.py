"""Data-parallel helpers for work done outside the training step: sampling, rollouts, reference caches.

A leaf module (torch.distributed only), so that ``engine/``, ``models/`` and ``train/`` can all use it.

The pattern is always the same three lines::

    mine = shard(prompts)                       # this process's contiguous block
    out = [work(p) for p in mine]               # e.g. sample K responses per prompt
    everything = gather_objects(out)            # every process gets all results, in the original order

``shard`` cuts contiguous blocks whose sizes differ by at most one (the first
``n % world`` processes take one more item), and ``gather_objects`` concatenates
the blocks in process order, so ``gather_objects(shard(x)) == x`` on any number
of processes. Outside ``accelerate launch`` (or before the process group exists)
the world is one process and every helper is the identity.

All of these need every process to call them (they are collectives), in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of data-parallel processes (1 when not distributed)."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's index in ``0 .. world_size() - 1``."""
    return dist.get_rank() if _initialized() else 0


def is_main() -> bool:
    """True on the process that writes files and logs (rank 0)."""
    return rank() == 0


def shard_bounds(n: int, index: int, world: int) -> tuple[int, int]:
    """``[start, end)`` of process ``index``'s contiguous block of ``n`` items.

    Sizes are ``n // world + 1`` for the first ``n % world`` processes and ``n // world`` after,
    e.g. n=5, world=2: [0, 3) and [3, 5).
    """
    base, extra = divmod(n, world)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shard(items: Sequence[T], index: int | None = None, world: int | None = None) -> list[T]:
    """This process's contiguous block of ``items`` (no item duplicated or dropped across processes)."""
    index = rank() if index is None else index
    world = world_size() if world is None else world
    start, end = shard_bounds(len(items), index, world)
    return list(items[start:end])


def gather_objects(items: Sequence[Any]) -> list[Any]:
    """Concatenate every process's list of picklable ``items`` in process order; all processes get it.

    With :func:`shard`, this restores the original order. Lists may have different lengths.
    """
    if world_size() == 1:
        return list(items)
    parts: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from process ``src`` on every process (e.g. a decision taken on the main process)."""
    if world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here."""
    if world_size() > 1:
        dist.barrier()


def sharded_across_processes(module: nn.Module) -> bool:
    """True when ``module``'s weights are split across processes (FSDP2 DTensors, ZeRO-3 partitions).

    Then every forward through it is a collective: each process must make the same number of
    calls (see :func:`lockstep_batches`), and ``generate`` must keep stepping until all are done.
    """
    if world_size() == 1:
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in module.parameters())


def lockstep_batches(items: Sequence[T], batch_size: int, lockstep: bool) -> list[list[T]]:
    """``items`` in consecutive batches of ``batch_size``, one forward each. Under ``lockstep`` every
    process gets as many batches as the busiest one: empty ones at the end stand for throw-away
    forwards that keep the collectives paired. A collective when ``lockstep``."""
    n = math.ceil(len(items) / batch_size)
    n = max(gather_objects([n])) if lockstep else n
    return [list(items[i * batch_size : (i + 1) * batch_size]) for i in range(n)]


@contextmanager
def full_weights(module: nn.Module) -> Iterator[None]:
    """Let code call the models inside a prepared ``module`` directly, e.g. ``generate`` on its policy.

    FSDP2 keeps the root unit's own weights (embeddings, final norm, LM head) sharded outside the
    root's forward, so they are gathered here and resharded after; the inner transformer blocks are
    units of their own and gather themselves when called. DDP and ZeRO-3 (whose hooks sit on every
    submodule) need nothing.
    """
    if not (hasattr(module, "unshard") and hasattr(module, "reshard")):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()
