"""Saving and loading: a LoRA run's final/ is a peft adapter folder, merged copies only on request;
pickled weights are refused with a message that says so."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from alignkit.config import LoraConfig, ModelConfig
from alignkit.errors import AlignkitError
from alignkit.models.loading import (
    apply_lora,
    is_adapter_folder,
    load_causal_lm,
    load_tokenizer,
    save_pretrained,
)
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer

IDS = torch.tensor([[0, 5, 6, 7, 8]])


def moved_lora_model():
    tok = build_tiny_tokenizer()
    model = apply_lora(build_tiny_model(tok), LoraConfig(enabled=True, r=4, alpha=8), "tiny-llama")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: move it so that the adapter changes the output
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval(), tok


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_a_lora_model_saves_its_adapter_where_peft_loads_it(tmp_path):
    model, tok = moved_lora_model()
    final = save_pretrained(model, tok, tmp_path / "final")
    names = {p.name for p in final.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"} <= names
    assert "model.safetensors" not in names and not (final / "merged").exists()  # no full copy by default
    assert is_adapter_folder(str(final))
    loaded = PeftModel.from_pretrained(build_tiny_model(tok), final).eval()
    torch.testing.assert_close(logits(loaded), logits(model))
    # alignkit loads the folder on its own: the adapter records its base (the tiny model)
    merged, _ = load_causal_lm(ModelConfig(name_or_path=str(final)))
    torch.testing.assert_close(logits(merged.eval()), logits(model), atol=1e-5, rtol=1e-5)
    assert not hasattr(merged, "peft_config")
    trainable, _ = load_causal_lm(ModelConfig(name_or_path=str(final), lora=LoraConfig(enabled=True)))
    assert hasattr(trainable, "peft_config") and any(p.requires_grad for p in trainable.parameters())


def test_save_merged_adds_a_plain_model_under_merged(tmp_path):
    model, tok = moved_lora_model()
    final = save_pretrained(model, tok, tmp_path / "final", save_merged=True)
    plain = AutoModelForCausalLM.from_pretrained(final / "merged").eval()
    torch.testing.assert_close(logits(plain), logits(model), atol=1e-5, rtol=1e-5)
    assert (final / "adapter_config.json").is_file()


def test_a_whole_model_saves_as_a_plain_model(tmp_path):
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    out = save_pretrained(model, tok, tmp_path / "final")
    assert (out / "model.safetensors").is_file() and not is_adapter_folder(str(out))
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out).eval()), logits(model))


def test_a_bin_only_model_folder_is_refused_as_a_pickle_not_called_missing(tmp_path):
    cfg = ModelConfig(name_or_path="tiny-llama")
    model, tok = load_causal_lm(cfg)
    save_pretrained(model, tok, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(AlignkitError) as err:
        load_causal_lm(ModelConfig(name_or_path=str(tmp_path / "m")), tokenizer=load_tokenizer("tiny-llama"))
    message = str(err.value)
    assert "not a local folder" not in message
    assert message.startswith(f"model '{tmp_path / 'm'}': the folder has only pytorch_model.bin and no *.safetensors")
    assert "pickle" in message and "\n" not in message
