"""``alignkit train``: build everything a config names, then hand it to the loop.

``TRAINERS`` maps a method family to the function that runs it; every name in
``alignkit.losses.LOSSES`` runs through :func:`train_preference`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alignkit.config import Config, save_config
from alignkit.errors import ConfigError

log = logging.getLogger("alignkit")

TRAINERS: dict[str, Callable[[Config], Path]] = {}


@dataclass(frozen=True)
class StepShape:
    """How a trainer's optimizer steps relate to training prompts, so that ``alignkit compare`` can
    give every method the same budget: a step takes ``train.batch_size x train.grad_accum x
    batches_per_step(cfg)`` prompts, and ``train.max_steps`` counts the steps of one of
    ``stages(cfg)`` stages."""

    batches_per_step: Callable[[Config], int] = lambda cfg: 1
    stages: Callable[[Config], int] = lambda cfg: 1


STEP_SHAPES: dict[str, StepShape] = {}


def register_trainer(name: str, shape: StepShape | None = None):
    def wrap(fn):
        TRAINERS[name] = fn
        if shape is not None:
            STEP_SHAPES[name] = shape
        return fn

    return wrap


def step_shape(method: str) -> StepShape:
    """The :class:`StepShape` that ``method``'s trainer declared (one batch, one stage by default)."""
    _load_plugins()
    return STEP_SHAPES.get(method, StepShape())


def run_train(cfg: Config) -> Path:
    """Train per ``cfg``; returns the run folder (``final/`` holds the model)."""
    from alignkit.losses import LOSSES, check_hyperparameters

    _load_plugins()
    if cfg.method in TRAINERS:
        runner = TRAINERS[cfg.method]
    elif cfg.method in LOSSES:
        check_hyperparameters(cfg.method, cfg.loss)
        runner = train_preference
    else:
        names = sorted(set(TRAINERS) | set(LOSSES))
        raise ConfigError(f"method: unknown method {cfg.method!r}; choose one of: {', '.join(names)}")
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return runner(cfg)


def _load_plugins() -> None:
    """Import the modules that register trainers beyond SFT and the loss registry."""
    import importlib

    for name in ("alignkit.train.reward_model", "alignkit.train.sampling", "alignkit.train.ppo",
                 "alignkit.train.rl_family"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


@register_trainer("sft")
def train_sft(cfg: Config) -> Path:
    from alignkit.engine import SequenceScorer
    from alignkit.train.build import policy_and_data, policy_saver
    from alignkit.train.loop import train_loop
    from alignkit.train.sft import SFTMethod, best_response_only

    model, tokenizer, train, held_out = policy_and_data(cfg)
    train = [best_response_only(ex) for ex in train]
    held_out = [best_response_only(ex) for ex in held_out]
    method = SFTMethod(tokenizer.pad_token_id, cfg.engine.share_prompt)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    train_loop(cfg.train, method, scorer, train, eval_examples=held_out, on_save=policy_saver(tokenizer), desc="sft")
    return Path(cfg.train.output_dir)


def train_preference(cfg: Config) -> Path:
    from alignkit.engine import SequenceScorer
    from alignkit.losses import get_loss
    from alignkit.train.accelerator import make_accelerator
    from alignkit.train.build import build_reference, policy_and_data, policy_saver
    from alignkit.train.loop import train_loop
    from alignkit.train.preference import PreferenceMethod

    model, tokenizer, train, held_out = policy_and_data(cfg)
    _check_preference_data(cfg, train)
    accelerator = make_accelerator(cfg.train)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    reference = None
    if get_loss(cfg.method).needs_reference:
        reference = build_reference(cfg, model, scorer.to(accelerator.device), tokenizer.pad_token_id,
                                    train + held_out)
        reference.to(accelerator.device)
    method = PreferenceMethod(cfg.method, cfg.loss, tokenizer.pad_token_id, reference, cfg.engine.share_prompt)
    train_loop(cfg.train, method, scorer, train, accelerator=accelerator, eval_examples=held_out,
               on_save=policy_saver(tokenizer), desc=cfg.method)
    return Path(cfg.train.output_dir)


def _check_preference_data(cfg: Config, examples) -> None:
    if cfg.method == "kto":
        return
    if not any(ex.scores is not None and len(set(ex.scores)) > 1 for ex in examples):
        raise ConfigError(
            f"data.train: method {cfg.method!r} needs preferences (pairwise or ranked rows with differing scores), "
            f"but {cfg.data.train} has none; use method: sft for SFT data"
        )
