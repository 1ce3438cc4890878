"""Load causal LMs and tokenizers from a path, a Hub id, a GGUF file, or a built-in model.

A ``.gguf`` file, a folder holding one, or the alias ``smollm2-135m-instruct`` is dequantized
once into a cached safetensors folder (:mod:`alignkit.models.gguf`), which is then loaded as any
saved model.

Weights are read and written as safetensors only; ``trust_remote_code`` stays
off unless the config turns it on. A name that is neither a local folder nor
reachable on the Hub ends in one :class:`AlignkitError` saying what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alignkit.errors import AlignkitError
from alignkit.models.gguf import GGUF_ALIASES, resolve_gguf

if TYPE_CHECKING:
    from alignkit.config import LoraConfig, ModelConfig

TINY_MODELS = {"tiny-llama": "llama", "tiny-gpt2": "gpt2"}
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _not_found(name: str, what: str, err: Exception) -> AlignkitError:
    return AlignkitError(
        f"{what} {name!r} is not a local folder and could not be loaded from the Hugging Face Hub "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). Give a path to a saved model, "
        f"a reachable Hub id, a .gguf file, or a built-in model: {', '.join([*TINY_MODELS, *GGUF_ALIASES])}."
    )


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """A tokenizer with a pad token (the EOS token when the tokenizer has none)."""
    from transformers import AutoTokenizer

    if name in TINY_MODELS:
        from alignkit.models.tiny import build_tiny_tokenizer

        return build_tiny_tokenizer()
    source = resolve_gguf(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_found(name, "tokenizer", err) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(cfg: ModelConfig, tokenizer=None):
    """The model named by ``cfg`` (trainable, fp32 unless ``cfg.dtype`` says otherwise) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    source = cfg.name_or_path if cfg.name_or_path in TINY_MODELS else resolve_gguf(cfg.name_or_path, cfg.dtype)
    tokenizer = tokenizer or load_tokenizer(cfg.tokenizer or source, cfg.trust_remote_code)
    dtype = getattr(torch, DTYPES[cfg.dtype])
    if cfg.name_or_path in TINY_MODELS:
        from alignkit.models.tiny import build_tiny_model

        model = build_tiny_model(tokenizer, arch=TINY_MODELS[cfg.name_or_path]).to(dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=dtype,
                trust_remote_code=cfg.trust_remote_code,
                use_safetensors=True,
            )
        except (OSError, ValueError) as err:
            raise _not_found(cfg.name_or_path, "model", err) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    return model, tokenizer


def apply_lora(model, lora: LoraConfig):
    """Wrap ``model`` in a peft LoRA adapter; the base weights stay frozen."""
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
    return get_peft_model(model, peft_cfg)


def sub_state_dict(state: dict | None, prefix: str) -> dict | None:
    """The entries of ``state`` under ``prefix`` (a submodule's), with the prefix removed; None stays None.

    A state dict gathered from FSDP / ZeRO-3 shards is keyed from the prepared root module; this
    picks out, e.g., the policy's weights (``"lm."``) to save as a model of its own."""
    return None if state is None else {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def save_pretrained(model, tokenizer, out_dir: str | Path, merge_lora: bool = True, state_dict=None) -> Path:
    """Save in HF format (safetensors) so ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads it.

    A LoRA model is merged into its base first (``merge_lora``), so the folder is a
    plain model; the adapter alone is also kept under ``adapter/`` for soups.
    ``state_dict`` (full weights gathered from FSDP / ZeRO-3 shards) replaces the module's own.
    """
    from alignkit.engine.logprobs import unwrap_causal_lm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(out_dir / "adapter", safe_serialization=True)
        if merge_lora:
            import copy

            model = copy.deepcopy(model).merge_and_unload()
    else:
        model = unwrap_causal_lm(model)
    model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
