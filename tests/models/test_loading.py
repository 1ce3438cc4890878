"""Model loading refuses pickled weights with a message that says so."""

import pytest

from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from alignkit.models.loading import load_causal_lm, load_tokenizer, save_pretrained


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
