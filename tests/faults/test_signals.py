"""SIGTERM and SIGUSR1 (what schedulers send before preemption) save at the next step boundary and
exit with one line; resume continues exactly (issue 18, failure 6: killed silently, no save)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_runs import assert_same_final, ppo_config, sft_config

from alignkit.cli import main
from alignkit.config import save_config
from alignkit.train.checkpoint import list_checkpoints
from alignkit.train.run import run_train
from alignkit.train.sft import SFTMethod


def signal_on_call(monkeypatch, cls, attr, signum, at_call):
    original = getattr(cls, attr)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signum)  # arrives mid-step; acted on at the step's end
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, attr, wrapped)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_at_the_step_boundary_and_resume_is_exact(tmp_path, capsys, monkeypatch, straight_runs,
                                                                signum):
    run = tmp_path / "run"
    cfg = sft_config(run, "train.save_every=0")
    save_config(cfg, tmp_path / "c.yaml")
    signal_on_call(monkeypatch, SFTMethod, "loss", signum, at_call=3)  # during step 3 (batch 4, one micro-batch)
    assert main(["train", str(tmp_path / "c.yaml")]) == 128 + signum
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert err == (f"alignkit train: error: got {name} at step 3: saved {run / 'checkpoints' / 'step-3'}; "
                   "run again with train.resume=true to continue\n")
    assert [p.name for p in list_checkpoints(run)] == ["step-3"] and not (run / "final").exists()
    monkeypatch.undo()
    run_train(sft_config(run, "train.save_every=0", "train.resume=true"))
    assert_same_final(straight_runs("sft"), run)


def test_ppo_saves_on_sigterm_and_resumes_exactly(tmp_path, monkeypatch, straight_runs):
    from alignkit.train import ppo
    from alignkit.train.guard import Preempted

    run = tmp_path / "run"
    signal_on_call(monkeypatch, ppo, "collect_rollout", signal.SIGTERM, at_call=2)
    with pytest.raises(Preempted, match="got SIGTERM at step 2"):
        run_train(ppo_config(run, "train.save_every=0"))
    monkeypatch.undo()
    run_train(ppo_config(run, "train.save_every=0", "train.resume=true"))
    assert_same_final(straight_runs("ppo"), run)


@pytest.mark.slow
def test_sigterm_to_a_real_process(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(Path(__file__).parents[2] / "configs/sft_tiny.yaml"),
           f"train.output_dir={run}", "train.max_steps=100000", "train.progress=false"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    last = proc.stderr.read().strip().splitlines()[-1]
    assert last.startswith("alignkit train: error: got SIGTERM at step ") and "train.resume=true" in last
    assert len(list_checkpoints(run)) == 1
