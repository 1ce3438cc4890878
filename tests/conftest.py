"""Shared fixtures."""

from pathlib import Path

import pytest

# The real human-feedback data lives beside the checkout: <repo root>/../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The folder of real datasets (see its README.md); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A base checkpoint of a 2-layer BERT (width 32) with the MiniLM tokenizer: a fast stand-in encoder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from alignkit.models.reward_model import resolve_model_path

    path = tmp_path_factory.mktemp("tiny_encoder")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("name")``: the module ``benchmarks/name.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_judge_path(tiny_encoder, tmp_path_factory) -> Path:
    """An untrained preference model (the tiny encoder with a token head, 64 tokens), saved: a fast judge."""
    import torch

    from alignkit.models.preference_model import save_preference_model
    from alignkit.models.reward_model import load_reward_model

    torch.manual_seed(0)
    model, tok = load_reward_model(tiny_encoder, kind="causal")
    model.max_length = 64
    return save_preference_model(model, tok, tmp_path_factory.mktemp("judge") / "pm")
