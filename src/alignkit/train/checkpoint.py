"""Atomic, verified, resumable checkpoints, and atomic final folders.

A checkpoint is written to ``step-N.tmp``, every file fsynced, its SHA-256 recorded in
``trainer_state.json`` (``files``), and only then renamed into place (the parent folder
fsynced too), so a crash or a full disk never leaves a half checkpoint that ``resume``
would pick up, and no ``.tmp`` folder is left behind by a failed save. On resume
(:func:`load_latest_checkpoint`) every file is verified against its checksum; a damaged
checkpoint (overwritten bytes, truncated file, garbled header) or one that fails to load
is skipped with one line, and the previous good one is used. ``final/`` and every other
result folder are written the same way (:func:`atomic_dir`).

A checkpoint holds what Accelerate saves (model, optimizer, scheduler, RNG of every process,
in a form that works under DDP, FSDP and DeepSpeed) plus ``trainer_state.json`` with the
optimizer step, which fixes the data position: the sample order is a function of the seed
and the step alone, so a run resumes at the same example on any number of processes.
Nothing is unpickled on load: weights are safetensors, and Accelerate reads the optimizer,
scheduler and RNG files with ``torch.load(weights_only=True)``, which refuses any object
that is not plain tensors and containers. State a trainer adds (e.g. PPO's KL controller
and reward moments, see ``Run.track``) goes into ``trainer_state.json`` as JSON, never
through ``register_for_checkpointing`` (which Accelerate unpickles with ``weights_only=False``).

Across world sizes: Accelerate writes one ``random_states_<i>.pkl`` per process and, on
load, each process reads its own if present (a missing one, e.g. 1 -> 2 processes, is
skipped with a log line: only dropout streams differ). Under DDP the model and optimizer
are saved whole; under FSDP with ``SHARDED_STATE_DICT`` they go through
``torch.distributed.checkpoint``, which reshards on load. A DeepSpeed ZeRO checkpoint is
partitioned by the number of processes: resume on the same number, or convert it first
with DeepSpeed's ``ds_to_universal.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignkit.errors import AlignkitError

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


# 1. Durable files and folders -------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk."""
    for path in _files(folder):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(sub)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Put folder ``tmp`` at ``final`` (replacing any folder there) and make the rename durable.

    ``final`` is never missing and never half-written: the old one moves aside first and is
    removed only after the new one is in place."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Write a folder atomically: fill the yielded temporary folder; on success it is fsynced and
    renamed to ``final``; on any error (a full disk included) it is removed and ``final`` keeps
    what it held before."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# 2. Checkpoints ---------------------------------------------------------------------------


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int) -> Path | None:
    """Save everything needed to resume after optimizer step ``step``; ``state`` is JSON.

    Rotation keeps ``keep`` checkpoints (0: all), and never removes the one just written."""
    root = checkpoint_dir(output_dir)
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()  # every process's files are in tmp before it is hashed and renamed
        if accelerator.is_main_process:
            files = {str(p.relative_to(tmp)): sha256(p) for p in _files(tmp)}
            state = {"step": step, "world_size": accelerator.num_processes, **state, "files": files}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            fsync_tree(tmp)
            replace_dir(tmp, final)
            others = [p for p in list_checkpoints(output_dir) if p != final]
            for old in others[: max(len(others) - (keep - 1), 0)] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(path: Path) -> dict:
    """The checkpoint's ``trainer_state.json`` after checking every file it lists; raises
    :class:`DamagedCheckpoint` naming the first file that is missing or differs."""
    try:
        state = json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise DamagedCheckpoint(f"{STATE_FILE} unreadable ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise DamagedCheckpoint(f"{STATE_FILE} has no step")
    for name, digest in (state.get("files") or {}).items():
        file = Path(path) / name
        if not file.is_file():
            raise DamagedCheckpoint(f"{name} is missing")
        if sha256(file) != digest:
            raise DamagedCheckpoint(f"{name} does not match its checksum")
    return state


class DamagedCheckpoint(Exception):
    """A checkpoint that must not be loaded; the message says which file and why."""


def load_latest_checkpoint(accelerator, output_dir: Path) -> tuple[Path, dict] | None:
    """Restore the newest checkpoint that verifies and loads, falling back past damaged ones with one
    line each; ``(path, trainer_state)``, or ``None`` when there is no checkpoint at all.

    Every process verifies the same files, so all pick the same checkpoint. A load error after a
    good checksum (e.g. a file whose checksum was forged) also falls back; Accelerate's loads that
    fail part-way are harmless because the next load overwrites model, optimizer, schedule and RNG."""
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return None
    for path in reversed(checkpoints):
        try:
            state = verify_checkpoint(path)
            load_checkpoint(accelerator, path, state)
            return path, state
        except DamagedCheckpoint as err:
            reason = str(err)
        except Exception as err:  # noqa: BLE001  (a load error of any kind: torch, safetensors, accelerate)
            reason = f"cannot be loaded: {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
        accelerator.print(f"checkpoint {path} is damaged ({reason}); falling back to the one before")
    raise AlignkitError(
        f"{checkpoint_dir(output_dir)}: every checkpoint is damaged (see above); start again with "
        "train.resume=false train.overwrite=true, or restore the folder from a backup"
    )


def load_checkpoint(accelerator, path: Path, state: dict | None = None) -> dict:
    """Restore what :func:`save_checkpoint` wrote (unverified; see :func:`load_latest_checkpoint`)."""
    from accelerate.utils import DistributedType

    state = state if state is not None else json.loads((Path(path) / STATE_FILE).read_text())
    saved_world = state.get("world_size", accelerator.num_processes)
    if saved_world != accelerator.num_processes:
        note = ""
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            note = (f"; a DeepSpeed ZeRO checkpoint may need --num_processes {saved_world} "
                    "or conversion with DeepSpeed's ds_to_universal.py")
        accelerator.print(f"resuming a {saved_world}-process checkpoint on {accelerator.num_processes}{note}")
    accelerator.load_state(str(path), load_kwargs={"weights_only": True})
    return state
