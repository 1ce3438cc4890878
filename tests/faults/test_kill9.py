"""kill -9 at a random point, then resume: the final weights equal an uninterrupted run's, and no
half-written checkpoint or final/ is ever picked up (the property issue 18 found holding; kept so)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_runs import CONFIGS, FAMILIES, assert_same_final

from alignkit.config import load_config, save_config
from alignkit.train.run import run_train


def raft_config(out: Path, *overrides: str):
    return load_config(CONFIGS / "raft_tiny.yaml", [f"train.output_dir={out}", "train.progress=false",
                                                     "train.save_every=1", "online.stages=2", *overrides])


CONFIG_OF = {**FAMILIES, "raft": raft_config}


def kill_after(cfg_file: Path, run: Path, lines: int, jitter: float) -> None:
    """Start `alignkit train`, SIGKILL it ``jitter`` seconds after metrics.jsonl has ``lines`` lines."""
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(cfg_file)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= lines:
            time.sleep(jitter)
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.parametrize(("family", "seed"), [
    ("sft", 0),
    pytest.param("sft", 1, marks=pytest.mark.slow),
    pytest.param("ppo", 0, marks=pytest.mark.slow),
    pytest.param("dpo", 0, marks=pytest.mark.slow),
    pytest.param("reward_model", 0, marks=pytest.mark.slow),
    pytest.param("raft", 0, marks=pytest.mark.slow),
])
def test_kill_9_and_resume_equals_the_straight_run(tmp_path, family, seed):
    rng = random.Random(seed)
    straight, run = tmp_path / "straight", tmp_path / "run"
    run_train(CONFIG_OF[family](straight))
    save_config(CONFIG_OF[family](run), tmp_path / "c.yaml")
    kill_after(tmp_path / "c.yaml", run, lines=rng.randint(1, 4), jitter=rng.uniform(0, 0.3))
    run_train(CONFIG_OF[family](run, "train.resume=true"))
    assert_same_final(straight, run)
    assert not list(run.rglob("*.tmp")), "a resumed run leaves no temporary folder"
