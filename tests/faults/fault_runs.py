"""Shared pieces of the fault matrix: tiny runs of each trainer family, and how to compare them.

Each family's ``straight`` run (module-scoped, built once) trains 6 steps with a checkpoint
every 2, so ``checkpoints/step-2`` and ``step-4`` stay on disk beside ``final/``: a test
copies that folder, breaks it the way its fault does, resumes, and compares ``final/``
with the straight run's (resuming from any good checkpoint repeats the same steps).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEPS = ["train.max_steps=6", "train.save_every=2", "train.keep_checkpoints=3", "train.progress=false"]


def sft_config(out: Path, *overrides: str):
    return load_config(None, [
        "method=sft", "model.name_or_path=tiny-llama", "data.train=alignkit:tiny_sft.jsonl", "data.max_length=64",
        f"train.output_dir={out}", "train.learning_rate=1e-3", "train.batch_size=4", *STEPS, *overrides])


def dpo_config(out: Path, *overrides: str):
    return sft_config(out, "method=dpo", "data.train=alignkit:tiny_pairs.jsonl", *overrides)


def reward_model_config(out: Path, *overrides: str):
    return load_config(CONFIGS / "reward_model_tiny.yaml", [f"train.output_dir={out}", *STEPS, *overrides])


def ppo_config(out: Path, *overrides: str):
    return load_config(CONFIGS / "ppo_tiny.yaml", [
        f"train.output_dir={out}", "train.batch_size=2", "ppo.num_ppo_epochs=1", "ppo.num_minibatches=1",
        "sampling.max_new_tokens=8", *STEPS, *overrides])


FAMILIES = {"sft": sft_config, "ppo": ppo_config, "dpo": dpo_config, "reward_model": reward_model_config}
FAST = ["sft", "ppo"]  # the default run; the other families behind @slow


def families():
    return [f if f in FAST else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    final = Path(run_dir) / "final"
    files = sorted(final.glob("*.safetensors"))
    assert files, f"no weights in {final}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def assert_same_final(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.isfinite(wb[k]).all(), k
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)
