"""Human choices from a file: the dry run writes the pairs, the labelled run reads the choices."""

import json

import pytest
import torch

from alignkit.diffusion.choices import choices_labeller, pair_writer, read_choices
from alignkit.errors import DataError


def test_dry_run_pairs_then_choices_train_on_the_same_pairs(tmp_path):
    pytest.importorskip("diffusers")
    from alignkit.diffusion.digits import build_digits_unet, digits_policy
    from alignkit.diffusion.trainer import DiffusionTask, DiffusionTrainConfig, train_diffusion

    cfg = DiffusionTrainConfig(method="d3po", rounds=1, prompts_per_round=2, samples_per_prompt=2, num_steps=2,
                               batch_size=2, seed=3)
    dry = DiffusionTask(digits_policy(build_digits_unet(0, width=8)), 10, labeller=pair_writer(tmp_path / "pairs"))
    train_diffusion(dry, cfg)
    written = [json.loads(line) for line in (tmp_path / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert [w["pair"] for w in written] == [0, 1] and (tmp_path / "pairs" / "pair_1_b.png").exists()
    choices = tmp_path / "choices.jsonl"
    choices.write_text('{"pair": 0, "preferred": "b"}\n{"pair": 1, "preferred": "a"}\n')
    task = DiffusionTask(digits_policy(build_digits_unet(0, width=8)), 10, labeller=choices_labeller(choices))
    history = train_diffusion(task, cfg)
    assert history[0]["preferred_first"] == pytest.approx(0.5)  # one "a" of two choices


def test_choices_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"pair": 0, "preferred": "a"}\n{"pair": 1, "preferred": "left"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:2: 'preferred' must be"):
        read_choices(bad)
    bad.write_text('{"pair": 1, "preferred": "a"}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: pair 1 out of order"):
        read_choices(bad)
    bad.write_text('{"pair": 0, "preferred": "a"}\n')
    label = choices_labeller(bad)
    with pytest.raises(DataError, match="1 choices, but the run asks about pair 1"):
        label(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))
