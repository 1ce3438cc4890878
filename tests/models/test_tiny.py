"""Tiny tokenizer and models: built locally, deterministic, loadable with the Auto classes."""

import os
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.models.tiny import (
    BOS,
    DEFAULT_CORPUS,
    EOS,
    IM_END,
    IM_START,
    PAD,
    build_tiny_model,
    build_tiny_tokenizer,
    tiny_model_dir,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_tokenizer_special_tokens(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    ids = [
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
        *tok.convert_tokens_to_ids([IM_START, IM_END]),
    ]
    assert len(set(ids)) == 5  # pad is distinct from eos
    assert len(tok) <= 512
    assert tok("hi").input_ids[0] == tok.bos_token_id  # plain encoding adds a BOS
    assert tok("hi", add_special_tokens=False).input_ids[0] != tok.bos_token_id


@pytest.mark.parametrize(
    "text", ["Hello world", "héllo 日本語 😀 \t\n", "\n\nHuman: hi\n\nAssistant:", "x" * 50]
)
def test_byte_level_round_trip(tok, text):
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id is None
    assert tok.decode(ids) == text


def test_tokenizer_is_deterministic_and_fast():
    start = time.perf_counter()
    a = build_tiny_tokenizer()
    assert time.perf_counter() - start < 2.0
    b = build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    c = build_tiny_tokenizer(corpus=["the cat sat on the mat. " * 5, "a dog ran in the park"], vocab_size=300)
    assert c.get_vocab() != a.get_vocab()
    assert len(c) <= 300


def test_default_corpus_is_learned(tok):
    # frequent corpus words are merged into few tokens, unseen byte strings are not
    assert len(tok("\n\nAssistant:", add_special_tokens=False).input_ids) <= 4
    assert len(DEFAULT_CORPUS) > 10


def test_chat_template(tok):
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|bos|><|im_start|>system\nbe nice<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    without = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith(without) and not without.endswith("assistant\n")
    with pytest.raises(Exception, match="unknown role"):
        tok.apply_chat_template([{"role": "wizard", "content": "x"}], tokenize=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_model_forward(tok, arch):
    model = build_tiny_model(tok, arch=arch)
    assert model.dtype == torch.float32
    assert model.config._attn_implementation == "sdpa"
    assert model.config.vocab_size == len(tok)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, key) == getattr(tok, key)
        assert getattr(model.generation_config, key) == getattr(tok, key)
    a, b = tok("hello there").input_ids[:4], tok("bad movie!!").input_ids[:3]
    ids = torch.tensor([a, b + [tok.pad_token_id]])
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, ids.shape[1], len(tok))  # (B, T, V)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_model_seeded_without_touching_global_rng(tok, arch):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_model(tok, arch=arch, seed=0)
    assert torch.equal(torch.rand(3), expected)
    b = build_tiny_model(tok, arch=arch, seed=0)
    c = build_tiny_model(tok, arch=arch, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_model_sizes(tok):
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=48)
    assert model.config.num_hidden_layers == 1 and model.config.intermediate_size == 48
    with pytest.raises(ValueError, match="unknown tiny arch"):
        build_tiny_model(tok, arch="mamba")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_model_dir_round_trip(tmp_path, tok, arch):
    path = tiny_model_dir(tmp_path / "tiny", tokenizer=tok, arch=arch, seed=3)
    assert (path / "model.safetensors").is_file()
    tok2 = AutoTokenizer.from_pretrained(path)
    model2 = AutoModelForCausalLM.from_pretrained(path)
    text = "\n\nHuman: héllo?\n\nAssistant: fine"
    assert tok2(text).input_ids == tok(text).input_ids
    assert tok2.chat_template == tok.chat_template
    assert (tok2.bos_token_id, tok2.eos_token_id, tok2.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    model = build_tiny_model(tok, arch=arch, seed=3)
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(model2(ids).logits, model(ids).logits)
    assert model2.generation_config.eos_token_id == tok.eos_token_id


def test_tiny_model_dir_default_tokenizer(tmp_path):
    path = tiny_model_dir(tmp_path, hidden_size=32, num_layers=1, num_heads=2)
    assert len(AutoTokenizer.from_pretrained(path)) == len(build_tiny_tokenizer())
