"""Config keys documented from one source (the field comments), did-you-mean, per-method sections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from alignkit.cli import build_parser, main
from alignkit.config import Config, load_config, save_config
from alignkit.config.cli import config_markdown
from alignkit.config.help import TRL_NAMES, field_docs, keys, section_of
from alignkit.errors import ConfigError
from alignkit.train.run import method_sections

ROOT = Path(__file__).resolve().parents[2]


def test_docs_config_md_is_current():
    """Regenerate with `alignkit config docs > docs/config.md`."""
    assert (ROOT / "docs" / "config.md").read_text() == config_markdown()


def test_every_key_has_a_one_line_doc():
    assert [k.name for k in keys(Config) if not k.doc] == []


def test_field_docs_read_same_line_and_continuation_comments():
    @dataclasses.dataclass
    class Section:
        a: int = 1  # the first
        b: str = (
            "x"  # wrapped by a formatter
        )
        c: float = 0.5  # starts here
        # and goes on here

    assert field_docs(Section) == {"a": "the first", "b": "wrapped by a formatter",
                                   "c": "starts here and goes on here"}


@pytest.mark.parametrize(("override", "hint"), [
    ("beta=0.1", "did you mean `loss.beta`? TRL's `beta` is alignkit's `loss.beta`"),
    ("learning_rate=1e-5", "did you mean `train.learning_rate`?"),
    ("train.per_device_train_batch_size=4", "did you mean `train.batch_size`?"),
    ("gradient_accumulation_steps=2", "did you mean `train.grad_accum`?"),
    ("num_train_epochs=2", "did you mean `train.num_epochs`?"),
    ("max_prompt_length=64", "did you mean `data.max_prompt_length`?"),
    ("report_to=tensorboard", "did you mean `train.tracker`?"),
    ("train.max_step=3", "did you mean `train.max_steps`?"),
    ("batch_size=3", "did you mean `train.batch_size`?"),
])
def test_unknown_keys_say_which_key_was_meant(override, hint):
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(None, [override])
    assert hint in str(err.value)


def test_every_trl_name_points_at_a_key_that_exists():
    known = {k.name for k in keys(Config)}
    assert [t for t in TRL_NAMES.values() if t not in known and section_of(t) not in known] == []


def test_config_show_lists_the_keys_the_method_reads(capsys):
    assert main(["config", "show", "dpo"]) == 0
    out = capsys.readouterr().out
    assert "loss.beta" in out and "float = 0.1" in out and "reference.mode" in out and "data.truncation" in out
    assert "ppo." not in out and "online." not in out and "sampling." not in out
    assert main(["config", "show", "sft"]) == 0
    out = capsys.readouterr().out
    assert "\nloss:" not in out and "reference." not in out and "engine.share_prompt" in out
    assert main(["config", "show", "nope"]) == 2


def test_train_help_lists_every_key():
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    text = sub.format_help()
    for key in keys(Config):
        assert key.name in text, key.name


def test_the_saved_config_holds_the_sections_the_method_reads(tmp_path):
    cfg = load_config(None, ["method=dpo"])
    save_config(cfg, tmp_path / "config.yaml", sections=method_sections("dpo"))
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert list(saved) == ["method", "model", "data", "train", "loss", "reference", "engine"]
    assert load_config(tmp_path / "config.yaml") == cfg  # what is left out is at its defaults
