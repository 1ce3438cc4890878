"""A damaged checkpoint is never trained from: resume falls back to the previous good one with one
line, and ends with the straight run's weights (issue 18, failure 1: it used to train into NaN)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fault_runs import FAMILIES, assert_same_final, copy_run

from alignkit.errors import AlignkitError
from alignkit.train.run import run_train


def overwrite_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\x7f" * min(4096, len(data) - middle)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))


DAMAGE = {"overwrite 4 KB": overwrite_middle, "truncate": truncate, "garble header": garble_header,
          "delete": Path.unlink}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize(("family", "name"), [
    ("sft", "model.safetensors"), ("sft", "optimizer.bin"),
    pytest.param("ppo", "model.safetensors", marks=pytest.mark.slow),
    pytest.param("ppo", "optimizer.bin", marks=pytest.mark.slow),
])
def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, capsys, straight_runs, family, name, damage):
    straight = straight_runs(family)
    run = copy_run(straight, tmp_path / "run")
    DAMAGE[damage](run / "checkpoints" / "step-4" / name)
    capsys.readouterr()
    run_train(FAMILIES[family](run, "train.resume=true"))
    out = capsys.readouterr().out
    assert f"checkpoint {run / 'checkpoints' / 'step-4'} is damaged ({name} " in out
    assert f"resuming from {run / 'checkpoints' / 'step-2'} (step 2)" in out
    assert_same_final(straight, run)


def test_ppo_falls_back_past_a_damaged_model_by_default(tmp_path, capsys, straight_runs):
    straight = straight_runs("ppo")
    run = copy_run(straight, tmp_path / "run")
    overwrite_middle(run / "checkpoints" / "step-4" / "model.safetensors")
    run_train(FAMILIES["ppo"](run, "train.resume=true"))
    assert "model.safetensors does not match its checksum" in capsys.readouterr().out
    assert_same_final(straight, run)


def test_a_damaged_state_file_is_skipped_too(tmp_path, capsys, straight_runs):
    straight = straight_runs("sft")
    run = copy_run(straight, tmp_path / "run")
    (run / "checkpoints" / "step-4" / "trainer_state.json").write_text('{"step": ')
    run_train(FAMILIES["sft"](run, "train.resume=true"))
    assert "trainer_state.json unreadable" in capsys.readouterr().out
    assert_same_final(straight, run)


def test_every_checkpoint_damaged_is_one_error(tmp_path, straight_runs):
    run = copy_run(straight_runs("sft"), tmp_path / "run")
    for step in (2, 4):
        overwrite_middle(run / "checkpoints" / f"step-{step}" / "model.safetensors")
    with pytest.raises(AlignkitError, match="every checkpoint is damaged"):
        run_train(FAMILIES["sft"](run, "train.resume=true"))


def test_checkpoints_record_a_checksum_for_every_file(straight_runs):
    ckpt = straight_runs("sft") / "checkpoints" / "step-4"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    on_disk = sorted(p.name for p in ckpt.iterdir() if p.name != "trainer_state.json")
    assert sorted(state["files"]) == on_disk and "model.safetensors" in on_disk
    assert all(len(digest) == 64 for digest in state["files"].values())
