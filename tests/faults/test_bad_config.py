"""Every bad config value the issue tried is one line on stderr and exit 2, before any training
(issue 18, failure 8: tracebacks, or silently accepted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SFT = ["model.name_or_path=tiny-llama", "data.train=alignkit:tiny_sft.jsonl", "train.progress=false"]
DPO = ["method=dpo", "model.name_or_path=tiny-llama", "data.train=alignkit:tiny_pairs.jsonl", "train.progress=false"]

CASES = [
    (SFT + ["train.learning_rate=-1e-5"], "train.learning_rate: must be > 0, got -1e-05"),
    (SFT + ["train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    (SFT + ["train.batch_size=-2"], "train.batch_size: must be >= 1, got -2"),
    (SFT + ["train.grad_accum=0"], "train.grad_accum: must be >= 1, got 0"),
    (SFT + ["train.max_steps=-5"], "train.max_steps: must be >= 0, got -5"),
    (SFT + ["train.adam_betas=[0.9,1.0]"], "train.adam_betas[1]: must be in [0, 1), got 1.0"),
    (SFT + ["train.adam_betas=[-0.1,0.99]"], "train.adam_betas[0]: must be in [0, 1), got -0.1"),
    (SFT + ["model.lora.enabled=true", "model.lora.r=0"], "model.lora.r: must be >= 1, got 0"),
    (DPO + ["loss.beta=high"], "loss.beta: expected a number, got 'high'"),
    (DPO + ["loss.beta=0"], "loss.beta: must be > 0, got 0.0"),
    (DPO + ["loss.beta=-1"], "loss.beta: must be > 0, got -1.0"),
    (["sampling.temperature=0"], "sampling.temperature: must be > 0 for method 'ppo'"),
    (["method=raft", "sampling.num_samples=0"], "sampling.num_samples: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[c[0][-1] for c in CASES])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    config = CONFIGS / "ppo_tiny.yaml" if not overrides[0].startswith(("model.", "method=dpo")) else None
    args = ["train", str(config or CONFIGS / "sft_tiny.yaml"), f"train.output_dir={tmp_path / 'run'}", *overrides]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err
    assert not (tmp_path / "run" / "final").exists()


def test_yaml_1e_minus_30_is_a_float_and_ipo_at_it_stops_as_diverged(tmp_path, capsys):
    """``1e-30`` used to reach IPO as a string (traceback); as the float it is, every step is inf."""
    args = ["train", str(CONFIGS / "sft_tiny.yaml"), f"train.output_dir={tmp_path / 'run'}", *DPO,
            "method=ipo", "loss.beta=1e-30", "train.max_steps=3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignkit train: error: step 1: the loss and the gradient norm are not finite")
    assert not (tmp_path / "run" / "final").exists()
