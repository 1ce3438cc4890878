"""Load causal LMs and tokenizers from a path, a Hub id, or a built-in tiny model.

Weights are read and written as safetensors only; ``trust_remote_code`` stays
off unless the config turns it on. A name that is neither a local folder nor
reachable on the Hub ends in one :class:`AlignkitError` saying what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alignkit import in_memory
from alignkit.errors import AlignkitError, ConfigError

if TYPE_CHECKING:
    from alignkit.config import LoraConfig, ModelConfig

TINY_MODELS = {"tiny-llama": "llama", "tiny-gpt2": "gpt2"}
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _not_found(name: str, what: str, err: Exception) -> AlignkitError:
    folder = Path(name).expanduser()
    if what == "model" and folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        found = f"only {', '.join(pickled[:3])}" if pickled else "no weights"
        return AlignkitError(
            f"model {name!r}: the folder has {found} and no *.safetensors file; alignkit loads safetensors "
            "only, because a .bin/.pt file is a pickle that can run code when loaded. Convert it once "
            "where you trust the file (from_pretrained(...).save_pretrained(dir, safe_serialization=True))."
        )
    return AlignkitError(
        f"{what} {name!r} is not a local folder and could not be loaded from the Hugging Face Hub "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Give a path to a saved model, "
        f"a reachable Hub id, or one of the built-in tiny models: {', '.join(TINY_MODELS)}."
    )


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """A tokenizer with a pad token (the EOS token when the tokenizer has none).

    ``name`` may be an in-memory name (:mod:`alignkit.in_memory`): a tokenizer object is used as
    given; a model object's tokenizer is loaded from what the model was loaded from."""
    from transformers import AutoTokenizer

    if in_memory.is_name(name):
        held = in_memory.lookup(name)
        if held is None:
            raise in_memory.missing(name, "model")
        if hasattr(held, "encode"):
            tok = held
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            return tok
        name = in_memory.source_path(held)
        if not name:
            raise ConfigError("tokenizer: the model object was built in memory and records no path to load "
                              "its tokenizer from; pass tokenizer=")
    if name in TINY_MODELS:
        from alignkit.models.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_found(name, "tokenizer", err) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(cfg: ModelConfig, tokenizer=None):
    """The model named by ``cfg`` (trainable, fp32 unless ``cfg.dtype`` says otherwise) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or load_tokenizer(cfg.tokenizer or cfg.name_or_path, cfg.trust_remote_code)
    dtype = getattr(torch, DTYPES[cfg.dtype])
    if is_adapter_folder(cfg.name_or_path):
        return _load_adapter_folder(cfg, tokenizer), tokenizer
    base_name = cfg.name_or_path
    if in_memory.is_name(cfg.name_or_path):
        model = in_memory.lookup(cfg.name_or_path)
        if model is None:
            raise in_memory.missing(cfg.name_or_path, "model.name_or_path")
        base_name = in_memory.source_path(model)
    elif cfg.name_or_path in TINY_MODELS:
        from alignkit.models.tiny import build_tiny_model

        model = build_tiny_model(tokenizer, arch=TINY_MODELS[cfg.name_or_path]).to(dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.name_or_path,
                dtype=dtype,
                trust_remote_code=cfg.trust_remote_code,
                use_safetensors=True,
            )
        except (OSError, ValueError) as err:
            raise _not_found(cfg.name_or_path, "model", err) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora.enabled and not hasattr(model, "peft_config"):
        model = apply_lora(model, cfg.lora, base_name)
    return model, tokenizer


def is_adapter_folder(path: str) -> bool:
    """A folder holding a peft adapter alone (a LoRA run's ``final/``), not a whole model."""
    folder = Path(path) if path and not in_memory.is_name(path) else None
    return bool(folder and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file())


def _load_adapter_folder(cfg: ModelConfig, tokenizer):
    """The base model the adapter records, with the adapter on it: trainable when ``cfg.lora.enabled``
    (training goes on from the adapter), otherwise merged into the base weights."""
    import json
    from dataclasses import replace

    from peft import PeftModel

    record = json.loads((Path(cfg.name_or_path) / "adapter_config.json").read_text())
    base_name = record.get("base_model_name_or_path") or ""
    if not base_name:
        raise ConfigError(f"model: the LoRA adapter {cfg.name_or_path} does not record its base model "
                          "(base_model_name_or_path in adapter_config.json); set it there")
    base_cfg = replace(cfg, name_or_path=base_name, tokenizer="", lora=replace(cfg.lora, enabled=False))
    base, _ = load_causal_lm(base_cfg, tokenizer)
    if cfg.lora.enabled:
        return PeftModel.from_pretrained(base, cfg.name_or_path, is_trainable=True)
    return PeftModel.from_pretrained(base, cfg.name_or_path).merge_and_unload()


def apply_lora(model, lora: LoraConfig, base_name: str = ""):
    """Wrap ``model`` in a peft LoRA adapter; the base weights stay frozen. ``base_name`` (a path, a
    Hub id or a built-in tiny model) is recorded in the adapter so that its folder loads on its own."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora.target_modules
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    if base_name:
        model.peft_config["default"].base_model_name_or_path = base_name
    return model


def sub_state_dict(state: dict | None, prefix: str) -> dict | None:
    """The entries of ``state`` under ``prefix`` (a submodule's), with the prefix removed; None stays None.

    A state dict gathered from FSDP / ZeRO-3 shards is keyed from the prepared root module; this
    picks out, e.g., the policy's weights (``"lm."``) to save as a model of its own."""
    return None if state is None else {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def save_pretrained(model, tokenizer, out_dir: str | Path, save_merged: bool = False, state_dict=None) -> Path:
    """Save in HF format (safetensors), with the tokenizer.

    A whole model loads with ``AutoModelForCausalLM.from_pretrained(out_dir)``. A LoRA model saves
    its adapter alone, as peft does, so ``PeftModel.from_pretrained(base, out_dir)`` loads it (and
    :func:`load_causal_lm` too, through the base the adapter records); ``save_merged`` also writes
    the adapter merged into the base weights under ``out_dir/merged``, a plain model.
    ``state_dict`` (full weights gathered from FSDP / ZeRO-3 shards) replaces the module's own.
    """
    from alignkit.engine.logprobs import unwrap_causal_lm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        # save_embedding_layers="auto" would look the base up on the Hub; alignkit never resizes embeddings
        model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict, save_embedding_layers=False)
        if save_merged:
            import copy

            if state_dict is not None:
                model = copy.deepcopy(model)
                model.load_state_dict(state_dict)
                merged = model.merge_and_unload()
            else:
                merged = copy.deepcopy(model).merge_and_unload()
            save_pretrained(merged, tokenizer, out_dir / "merged")
    else:
        unwrap_causal_lm(model).save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
