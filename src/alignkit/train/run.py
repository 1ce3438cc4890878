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

    for name in ("alignkit.train.reward_model", "alignkit.train.sampling", "alignkit.train.ppo"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def _policy_and_data(cfg: Config):
    from alignkit.data.pipeline import load_tokenized
    from alignkit.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(cfg.model)
    train, held_out = load_tokenized(cfg.data, tokenizer, seed=cfg.train.seed)
    log.info("loaded %d training and %d held-out examples", len(train), len(held_out))
    return model, tokenizer, train, held_out


def _save_final(tokenizer):
    from alignkit.models.loading import save_pretrained, sub_state_dict

    def on_save(module, out_dir: Path, state_dict=None) -> None:
        # Under FSDP / ZeRO-3 the loop passes the gathered weights of the SequenceScorer.
        save_pretrained(module.lm, tokenizer, out_dir, state_dict=sub_state_dict(state_dict, "lm."))

    return on_save


@register_trainer("sft")
def train_sft(cfg: Config) -> Path:
    from alignkit.engine import SequenceScorer
    from alignkit.train.loop import train_loop
    from alignkit.train.sft import SFTMethod, best_response_only

    model, tokenizer, train, held_out = _policy_and_data(cfg)
    train = [best_response_only(ex) for ex in train]
    held_out = [best_response_only(ex) for ex in held_out]
    method = SFTMethod(tokenizer.pad_token_id, cfg.engine.share_prompt)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    train_loop(cfg.train, method, scorer, train, eval_examples=held_out, on_save=_save_final(tokenizer), desc="sft")
    return Path(cfg.train.output_dir)


def build_reference(cfg: Config, policy, scorer, pad_id: int, examples):
    """The reference named by ``cfg.reference`` (see :mod:`alignkit.models.reference`)."""
    from alignkit.models.gguf import cache_root
    from alignkit.models.loading import load_causal_lm
    from alignkit.models.reference import (
        AdapterReference,
        CachedReference,
        FrozenReference,
        InitialPolicyReference,
        copy_of,
        reference_fingerprint,
    )

    mode = cfg.reference.mode
    if mode == "none":
        raise ConfigError(f"reference.mode: method {cfg.method!r} needs a reference; use auto, copy, adapter or precomputed")
    lora = cfg.model.lora.enabled
    if mode == "adapter" and not lora:
        raise ConfigError("reference.mode: adapter needs model.lora.enabled: true")
    share = cfg.engine.share_prompt
    if cfg.reference.path:
        ref_cfg = type(cfg.model)(name_or_path=cfg.reference.path, trust_remote_code=cfg.model.trust_remote_code,
                                  dtype=cfg.model.dtype)
        source = FrozenReference(load_causal_lm(ref_cfg)[0], pad_id, share, cfg.engine.chunk_size)
    elif lora and mode in ("auto", "adapter", "precomputed"):
        source = AdapterReference(scorer, pad_id, share)
    elif mode == "precomputed":  # scored before the first step: the policy is still the reference
        source = InitialPolicyReference(scorer, pad_id, share)
    else:
        source = FrozenReference(copy_of(policy), pad_id, share, cfg.engine.chunk_size)
    if mode != "precomputed":
        return source
    weights = source.scorer.lm if isinstance(source, FrozenReference) else policy
    key = reference_fingerprint(weights, {"share_prompt": share, "chunk_size": cfg.engine.chunk_size})
    cache_dir = Path(cfg.reference.cache_dir or cache_root() / "reference") / key
    return CachedReference.build(source, examples, cfg.train.batch_size, cache_dir, progress=cfg.train.progress)


def train_preference(cfg: Config) -> Path:
    from alignkit.engine import SequenceScorer
    from alignkit.losses import get_loss
    from alignkit.train.loop import make_accelerator, train_loop, used_examples
    from alignkit.train.preference import PreferenceMethod

    model, tokenizer, train, held_out = _policy_and_data(cfg)
    _check_preference_data(cfg, train)
    accelerator = make_accelerator(cfg.train)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    reference = None
    if get_loss(cfg.method).needs_reference:
        reference = build_reference(cfg, model, scorer.to(accelerator.device), tokenizer.pad_token_id,
                                    used_examples(cfg.train, train, accelerator.num_processes) + held_out)
        reference.to(accelerator.device)
    method = PreferenceMethod(cfg.method, cfg.loss, tokenizer.pad_token_id, reference, cfg.engine.share_prompt)
    train_loop(cfg.train, method, scorer, train, accelerator=accelerator, eval_examples=held_out,
               on_save=_save_final(tokenizer), desc=cfg.method)
    return Path(cfg.train.output_dir)


def _check_preference_data(cfg: Config, examples) -> None:
    if cfg.method == "kto":
        return
    if not any(ex.scores is not None and len(set(ex.scores)) > 1 for ex in examples):
        raise ConfigError(
            f"data.train: method {cfg.method!r} needs preferences (pairwise or ranked rows with differing scores), "
            f"but {cfg.data.train} has none; use method: sft for SFT data"
        )
