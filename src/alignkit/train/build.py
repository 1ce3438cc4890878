"""What the trainers build from a config: the policy and its data, the reference, the final save."""

from __future__ import annotations

import logging
from pathlib import Path

from alignkit.config import Config
from alignkit.errors import ConfigError

log = logging.getLogger("alignkit")


def policy_and_data(cfg: Config, need: str = "", batches_per_step: int = 1):
    """The policy and its tokenizer (``cfg.model``), and the tokenized training and held-out data (``cfg.data``);
    ``need`` is what every row must carry (see :mod:`alignkit.data.requirements`). Only the training rows
    that the run's steps draw (global batches of ``batches_per_step`` micro-batch sets, see
    :func:`~alignkit.train.runtime.used_indices`) are tokenized up front; any other row when read."""
    import os

    from alignkit.data.pipeline import load_tokenized
    from alignkit.distributed import world_size
    from alignkit.models.loading import load_causal_lm
    from alignkit.train.runtime import used_indices

    model, tokenizer = load_causal_lm(cfg.model)
    world = int(os.environ.get("WORLD_SIZE", world_size()))  # before the process group exists: the launcher's
    train, held_out = load_tokenized(cfg.data, tokenizer, seed=cfg.train.seed, need=need, method=cfg.method,
                                     used=lambda n: used_indices(cfg.train, n, world, batches_per_step))
    log.info("loaded %d training and %d held-out examples", len(train), len(held_out))
    return model, tokenizer, train, held_out


def policy_saver(tokenizer, save_merged: bool = False):
    """The final save of a :class:`~alignkit.engine.SequenceScorer`'s policy in HF format (see
    :func:`alignkit.train.runtime.save_final`; under FSDP / ZeRO-3 ``state_dict`` is the scorer's, gathered).
    A LoRA policy saves its adapter, and with ``save_merged`` the merged model under ``merged/``."""
    from alignkit.models.loading import save_pretrained, sub_state_dict

    def save(scorer, out_dir: Path, state_dict=None) -> None:
        save_pretrained(scorer.lm, tokenizer, out_dir, save_merged, state_dict=sub_state_dict(state_dict, "lm."))

    return save


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
