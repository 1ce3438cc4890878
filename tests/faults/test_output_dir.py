"""One run per output folder, and a fresh run never mixes with an earlier one's checkpoints
(issue 18, failures 3 and 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fault_runs import sft_config

from alignkit.errors import ConfigError
from alignkit.train.checkpoint import list_checkpoints, save_checkpoint
from alignkit.train.guard import output_lock
from alignkit.train.run import run_train


def test_a_fresh_run_refuses_a_folder_with_an_earlier_runs_checkpoints(tmp_path, straight_runs):
    """Run 1 left step-2 and step-4; run 2 (resume false) must not start there: its own checkpoints
    would be rotated away by the stale ones, and a later resume would continue run 1 under run 2's config."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight_runs("sft"), run)
    with pytest.raises(ConfigError, match=r"holds an earlier run \(checkpoints/step-2, checkpoints/step-4\); "
                                          r"continue it with train.resume=true, delete it with train.overwrite=true"):
        run_train(sft_config(run, "train.learning_rate=2e-3"))
    run_train(sft_config(run, "train.learning_rate=2e-3", "train.overwrite=true"))  # run 2's own checkpoints
    assert [p.name for p in list_checkpoints(run)] == ["step-2", "step-4"]


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    for stale in (30, 35):  # newer by number than what this run writes
        save_checkpoint(accelerator, tmp_path, stale, {}, keep=0)
    save_checkpoint(accelerator, tmp_path, 5, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-5", "step-35"]
    save_checkpoint(accelerator, tmp_path, 10, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-10", "step-35"]
    assert not list(tmp_path.glob("checkpoints/*.tmp")) and model is not None


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    with output_lock(run):
        with pytest.raises(ConfigError, match=rf"train.output_dir: {run} is in use by another alignkit run "
                                              rf"\(pid {os.getpid()}\)"):
            run_train(sft_config(run))
    run_train(sft_config(run, "train.save_every=0"))  # the lock went with the first holder
    assert (run / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_concurrent_processes(tmp_path):
    """Two real `alignkit train` processes on one folder: the second exits 2 at once, the first finishes."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(Path(__file__).parents[2] / "configs/sft_tiny.yaml"),
           f"train.output_dir={run}", "train.max_steps=200", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert second.returncode == 2 and "is in use by another alignkit run" in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
