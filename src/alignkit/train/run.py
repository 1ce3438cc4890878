"""``alignkit train``: look the config's method up in the registry (:mod:`alignkit.train.methods`),
check its config, and run its trainer."""

from __future__ import annotations

from pathlib import Path

from alignkit.config import Config, save_config
from alignkit.train.methods import MethodSpec, StepShape, method_spec, register_method

__all__ = ["StepShape", "register_trainer", "run_train"]


def run_train(cfg: Config) -> Path:
    """Train per ``cfg``; returns the run folder (``final/`` holds the model)."""
    spec = method_spec(cfg.method)
    spec.check(cfg)
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return spec.trainer(cfg)


def register_trainer(name: str, shape: StepShape | None = None, *, data: str = "custom", family: str = ""):
    """Register ``fn(Config) -> Path`` as the trainer of method ``name``, a :class:`MethodSpec` with
    ``shape`` (one batch a step, one stage by default); ``family`` defaults to the name."""
    def wrap(fn):
        register_method(MethodSpec(name, family or name, fn, data, step_shape=shape or StepShape()))
        return fn

    return wrap
