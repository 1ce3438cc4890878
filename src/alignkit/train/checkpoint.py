"""Atomic, resumable checkpoints.

A checkpoint is written to ``step-N.tmp`` and renamed into place, so a crash
never leaves a half checkpoint that ``resume`` would pick up. It holds what
Accelerate saves (model, optimizer, scheduler, RNG of every process, in a form
that works under DDP, FSDP and DeepSpeed) plus ``trainer_state.json`` with the
optimizer step, which fixes the data position: the sample order is a function of
the seed and the step alone, so a run resumes at the same example on any number
of processes.

Across world sizes: Accelerate writes one ``random_states_<i>.pkl`` per process
and, on load, each process reads its own if present (a missing one, e.g. 1 -> 2
processes, is skipped with a log line: only dropout streams differ). Under DDP
the model and optimizer are saved whole; under FSDP with ``SHARDED_STATE_DICT``
they go through ``torch.distributed.checkpoint``, which reshards on load. A
DeepSpeed ZeRO checkpoint is partitioned by the number of processes: resume on
the same number, or convert it first with DeepSpeed's ``ds_to_universal.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int) -> Path | None:
    """Save everything needed to resume after optimizer step ``step``."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process's files are in tmp before it is renamed
    if accelerator.is_main_process:
        state = {"step": step, "world_size": accelerator.num_processes, **state}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns its ``trainer_state.json``."""
    from accelerate.utils import DistributedType

    state = json.loads((Path(path) / STATE_FILE).read_text())
    saved_world = state.get("world_size", accelerator.num_processes)
    if saved_world != accelerator.num_processes:
        note = ""
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            note = (f"; a DeepSpeed ZeRO checkpoint may need --num_processes {saved_world} "
                    "or conversion with DeepSpeed's ds_to_universal.py")
        accelerator.print(f"resuming a {saved_world}-process checkpoint on {accelerator.num_processes}{note}")
    accelerator.load_state(str(path))
    return state
