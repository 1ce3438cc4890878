"""What keeps a run from producing garbage or losing work, shared by every trainer.

- :func:`output_lock`: one run per output folder (an ``fcntl`` lock held for the whole run).
- :func:`claim_output_dir`: a fresh run refuses a folder that holds another run's
  checkpoints or stages (they would be rotated away wrongly, or resumed later under the
  wrong config), unless told to clear them (``train.overwrite``).
- :class:`StepGuard`: at each optimizer step boundary, stop on a non-finite loss or
  gradient norm (or skip up to ``train.max_nonfinite_steps`` such steps first), refuse to
  save non-finite weights, and turn a termination signal (``train.save_on_signals``,
  SIGTERM and SIGUSR1 by default: what cluster schedulers send before preemption) into
  "save a checkpoint now and exit" (:class:`Preempted`).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignkit.errors import AlignkitError, ConfigError
from alignkit.train.checkpoint import checkpoint_dir, list_checkpoints

LOCK_FILE = ".alignkit.lock"


class Diverged(AlignkitError):
    """The loss or gradient norm stopped being finite; nothing non-finite was applied or saved."""


class Preempted(AlignkitError):
    """A termination signal arrived; a checkpoint was saved at the step boundary. ``exit_code`` is
    128 + the signal number, as a shell reports a process the signal ended."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


# 1. The output folder ----------------------------------------------------------------------


@contextmanager
def output_lock(output_dir: Path, main: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``output_dir`` for the block; another run on it gets a ConfigError.

    Only the main process (global rank 0) locks: the other processes are the same run. The lock
    is the kernel's (``fcntl.flock``), so it goes away with the process, even after kill -9."""
    if not main:
        yield
        return
    import fcntl

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(output_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"train.output_dir: {output_dir} is in use by another alignkit run (pid {holder}); "
                "wait for it to finish or choose another train.output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def earlier_run_state(output_dir: Path) -> list[Path]:
    """What an earlier run left that a later one would pick up: checkpoints and sampling stages."""
    out = Path(output_dir)
    found = list_checkpoints(out)
    found += sorted(p for p in out.glob("stage-*") if p.is_dir()) if out.is_dir() else []
    return found


def claim_output_dir(output_dir: Path, resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Before a run writes anything: a fresh run (``resume`` false) refuses a folder holding an
    earlier run's checkpoints or stages, or clears them (and its ``final/``) when ``overwrite``
    (on the process with ``delete``: the main one)."""
    if resume:
        return
    found = earlier_run_state(output_dir)
    if not found:
        return
    if not overwrite:
        names = ", ".join(str(p.relative_to(output_dir)) for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise ConfigError(
            f"train.output_dir: {output_dir} holds an earlier run ({names}); continue it with "
            "train.resume=true, delete it with train.overwrite=true, or choose another train.output_dir"
        )
    if not delete:
        return
    shutil.rmtree(checkpoint_dir(output_dir), ignore_errors=True)
    for path in [p for p in found if p.name.startswith("stage-")] + [Path(output_dir) / "final"]:
        shutil.rmtree(path, ignore_errors=True)


# 2. The step boundary ----------------------------------------------------------------------


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGUSR1": signal.SIGUSR1, "SIGUSR2": signal.SIGUSR2, "SIGHUP": signal.SIGHUP}
_received: list[int] = []  # signals caught since the handlers were installed, acted on at a step boundary


@contextmanager
def signal_handlers(names: list[str] | tuple[str, ...]) -> Iterator[None]:
    """For the block, signals ``names`` (e.g. ``["SIGTERM", "SIGUSR1"]``) only ask the run to stop at the
    next step boundary (see :meth:`StepGuard.stop_requested`); the previous handlers come back after."""
    import threading

    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise ConfigError(f"train.save_on_signals: unknown signal {unknown[0]!r}; choose from {', '.join(SIGNALS)}")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        for name in names:
            previous[SIGNALS[name]] = signal.signal(SIGNALS[name], lambda signum, frame: _received.append(signum))
    _received.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()


class StepGuard:
    """One per training loop: call :meth:`check_step` once per optimizer step before applying it,
    :meth:`stop_requested` at the step boundary, and :meth:`check_weights` before a save."""

    def __init__(self, accelerator, max_nonfinite_steps: int = 0):
        self.accelerator = accelerator
        self.max_nonfinite = max_nonfinite_steps
        self.skipped = 0
        self.warned_zero = False

    def _any_process(self, *flags: float) -> list[float]:
        """``flags`` maxed over processes (every process must take the same decision)."""
        if self.accelerator.num_processes == 1:
            return list(flags)
        import torch
        import torch.distributed as dist

        t = torch.tensor(flags, dtype=torch.float64, device=self.accelerator.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def check_step(self, step: int, loss: float, grad_norm: float | None) -> bool:
        """True to apply optimizer step ``step`` (1-based); False to skip it (its gradients must be
        dropped); raises :class:`Diverged` once more than ``max_nonfinite_steps`` were non-finite."""
        bad_loss = not math.isfinite(loss)
        bad_norm = grad_norm is not None and not math.isfinite(grad_norm)
        bad_loss, bad_norm = (bool(x) for x in self._any_process(float(bad_loss), float(bad_norm)))
        if not (bad_loss or bad_norm):
            if grad_norm == 0.0 and loss != 0.0 and not self.warned_zero:
                self.warned_zero = True  # e.g. after a huge learning rate saturated every unit: training is over
                self.accelerator.print(f"warning: step {step}: the gradient is exactly 0 at a non-zero loss; the "
                                       "model may be saturated (too high train.learning_rate?) and learns nothing")
            return True
        what = {(True, False): "the loss is", (False, True): "the gradient norm is",
                (True, True): "the loss and the gradient norm are"}[bad_loss, bad_norm]
        self.skipped += 1
        if self.skipped > self.max_nonfinite:
            skipped = f" after skipping {self.skipped - 1} such steps" if self.skipped > 1 else ""
            raise Diverged(
                f"step {step}: {what} not finite{skipped}; stopped before applying it, so the weights and "
                "checkpoints on disk are finite. Lower train.learning_rate, check the loss hyper-parameters "
                "(e.g. a tiny loss.beta), or set train.max_nonfinite_steps to skip a few such steps"
            )
        self.accelerator.print(f"step {step}: {what} not finite; step skipped "
                               f"({self.skipped} of at most {self.max_nonfinite})")
        return False

    def stop_requested(self) -> int | None:
        """The signal number to stop for (agreed by every process), or None to go on."""
        (signum,) = self._any_process(float(_received[0] if _received else 0))
        return int(signum) or None

    def preempted(self, signum: int, step: int, saved: Path | None) -> Preempted:
        name = signal.Signals(signum).name
        where = f"saved {saved}" if saved else "nothing new to save"
        return Preempted(f"got {name} at step {step}: {where}; run again with train.resume=true to continue",
                         signum)

    def check_weights(self, module, what: str) -> None:
        """Refuse to save ``what`` when a parameter is not finite (checked on every process's shard)."""
        check_finite_weights(self.accelerator, module, what)


def check_finite_weights(accelerator, module, what) -> None:
    """Raise :class:`Diverged` (on every process) when any process holds a non-finite parameter of
    ``module``, rather than save ``what``. A collective under several processes."""
    import torch

    bad = next((n for n, p in module.named_parameters() if not bool(torch.isfinite(p.detach()).all())), None)
    flag = torch.tensor([float(bad is not None)], device=accelerator.device)
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        raise Diverged(f"not saving {what}: parameter {bad or '(on another process)'} is not finite")

