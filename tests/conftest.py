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
