"""A full disk is one line and exit 2, and leaves neither a half-written final/ nor a temporary
folder (issue 18, failure 9: a traceback, and final/ with a config but no weights)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest
from fault_runs import CONFIGS, sft_config

from alignkit.cli import main
from alignkit.config import save_config


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_final(tmp_path, capsys, monkeypatch):
    import transformers.modeling_utils

    run = tmp_path / "run"
    save_config(sft_config(run, "train.save_every=0"), tmp_path / "c.yaml")
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", no_space)  # after config.json is written
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bar
    assert last.startswith("alignkit train: error: no space left on device (OSError")
    assert not (run / "final").exists() and not (run / "final.tmp").exists()


def test_disk_full_while_writing_a_checkpoint_keeps_the_old_final_and_no_tmp(tmp_path, capsys, monkeypatch,
                                                                             straight_runs):
    import accelerate.checkpointing

    run = tmp_path / "run"
    shutil.copytree(straight_runs("sft"), run)
    before = (run / "final" / "model.safetensors").read_bytes()
    save_config(sft_config(run, "train.overwrite=true", "train.max_steps=4"), tmp_path / "c.yaml")
    monkeypatch.setattr(accelerate.checkpointing, "save", no_space)
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert "no space left on device" in capsys.readouterr().err
    assert not list(run.rglob("*.tmp"))
    # overwrite cleared the earlier run's final/; nothing half-written took its place
    assert not (run / "final").exists() or (run / "final" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_a_real_full_disk(tmp_path):
    """A 500 KB tmpfs (the tiny model is ~800 KB): needs mount rights, else skipped."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=500k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = subprocess.run(["python", "-m", "alignkit.cli", "train", str(CONFIGS / "sft_tiny.yaml"),
                                 f"train.output_dir={mount / 'run'}", "train.max_steps=2", "train.progress=false"],
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("alignkit train: error: no space left on device")
        assert not (mount / "run" / "final").exists() and not list(Path(mount).rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)])
