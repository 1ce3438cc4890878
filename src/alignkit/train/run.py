"""``alignkit train``: look the config's method up in the registry (:mod:`alignkit.train.methods`),
check its config, and run its trainer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alignkit.config import Config, save_config
from alignkit.train.guard import claim_output_dir, output_lock, signal_handlers
from alignkit.train.methods import MethodSpec, StepShape, method_sections, method_spec, register_method

log = logging.getLogger("alignkit")

__all__ = ["StepShape", "method_sections", "register_trainer", "run_train"]


def run_train(cfg: Config) -> Path:
    """Train per ``cfg``; returns the run folder (``final/`` holds the model)."""
    spec = method_spec(cfg.method)
    spec.check(cfg)
    out = Path(cfg.train.output_dir)
    main = os.environ.get("RANK", "0") == "0"  # before Accelerate starts: the launcher's global rank
    # one run per folder (locked), a fresh run never mixes with an earlier one's checkpoints, and
    # SIGTERM / SIGUSR1 ask the run to save at its next step boundary (alignkit.train.guard)
    with output_lock(out, main), signal_handlers(cfg.train.save_on_signals):
        claim_output_dir(out, cfg.train.resume, cfg.train.overwrite, delete=main)
        if main:
            save_config(cfg, out / "config.yaml", sections=method_sections(cfg.method))
            log.info("config (%s):\n%s", out / "config.yaml", (out / "config.yaml").read_text().rstrip())
        return spec.trainer(cfg)


def register_trainer(name: str, shape: StepShape | None = None, *, data: str = "custom", family: str = "",
                     sections: tuple[str, ...] = ()):
    """Register ``fn(Config) -> Path`` as the trainer of method ``name``, a :class:`MethodSpec` with
    ``shape`` (one batch a step, one stage by default); ``family`` defaults to the name; ``sections``:
    the config sections it reads beyond the common ones."""
    def wrap(fn):
        register_method(MethodSpec(name, family or name, fn, data, step_shape=shape or StepShape(),
                                   sections=tuple(sections)))
        return fn

    return wrap
