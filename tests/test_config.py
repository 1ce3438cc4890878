"""Strict typed configs: unknown keys and wrong types are errors naming the key."""

import pytest

from alignkit.config import Config, apply_overrides, load_config, save_config
from alignkit.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(
        tmp_path, "method: dpo\ntrain:\n  learning_rate: 1e-4\n  batch_size: 2\nloss:\n  beta: 0.2\n"
    )
    cfg = load_config(path, ["train.batch_size=4", "model.lora.enabled=true", "loss.beta=0.5"])
    assert cfg.method == "dpo" and cfg.train.learning_rate == 1e-4 and cfg.train.batch_size == 4
    assert cfg.model.lora.enabled is True and cfg.loss == {"beta": 0.5}


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    with pytest.raises(
        ConfigError, match=r"train\.learning_rat: unknown key \(did you mean `train.learning_rate`\?\)"
    ):
        load_config(write(tmp_path, "train:\n  learning_rat: 1\n"))


def test_wrong_type_and_literal(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer, got 'eight'"):
        load_config(None, ["train.batch_size=eight"])
    with pytest.raises(
        ConfigError,
        match=r"train\.schedule: 'cosinus' is not allowed; choose one of: constant, linear, cosine",
    ):
        load_config(None, ["train.schedule=cosinus"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(None, ["train.resume=maybe"])


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml:2: invalid YAML"):
        load_config(write(tmp_path, "method: sft\n  bad: indent\n"))


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/config.yaml")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["train.batch_size"])


def test_roundtrip(tmp_path):
    cfg = load_config(None, ["method=ipo", "loss.beta=0.3", "data.train=x.jsonl"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert isinstance(Config(), Config)
