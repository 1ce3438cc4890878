"""A non-finite loss or gradient norm stops the run before the update, and nothing non-finite is
ever saved (issue 18, failure 2: inf at every step, exit 0, a NaN model as final/)."""

from __future__ import annotations

import math

import pytest
import torch
from fault_runs import dpo_config, ppo_config, sft_config

from alignkit.train.guard import Diverged
from alignkit.train.run import run_train
from alignkit.train.sft import SFTMethod


def test_ipo_at_a_tiny_beta_stops_at_step_1_with_nothing_saved(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"^step 1: the loss and the gradient norm are not finite; stopped before"):
        run_train(dpo_config(run, "method=ipo", "loss.beta=1e-30"))
    assert not (run / "final").exists() and not (run / "checkpoints").exists()


def test_skipped_steps_are_counted_then_the_run_stops(tmp_path, monkeypatch, capsys):
    original = SFTMethod.loss
    calls = {"n": 0}

    def nan_from_step_3(self, module, examples):
        calls["n"] += 1
        loss, metrics = original(self, module, examples)
        return (loss * math.nan if calls["n"] > 2 else loss), metrics

    monkeypatch.setattr(SFTMethod, "loss", nan_from_step_3)
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"^step 5: the loss and the gradient norm are not finite after skipping 2 such steps"):
        run_train(sft_config(run, "train.max_nonfinite_steps=2", "train.save_every=0"))
    out = capsys.readouterr().out
    assert "step 3: the loss and the gradient norm are not finite; step skipped (1 of at most 2)" in out
    assert not (run / "final").exists()


def test_a_non_finite_weight_is_never_saved(tmp_path, monkeypatch):
    """Should anything make a weight non-finite, neither a checkpoint nor final/ is written."""
    original = SFTMethod.loss

    def poison(self, module, examples):
        with torch.no_grad():
            next(module.parameters()).view(-1)[0] = math.inf
        return original(self, module, examples)

    monkeypatch.setattr(SFTMethod, "loss", poison)
    run = tmp_path / "run"
    with pytest.raises(Diverged):
        run_train(sft_config(run, "train.max_nonfinite_steps=10"))
    assert not (run / "final").exists() and not (run / "checkpoints").exists()


def test_a_saturated_model_is_reported(tmp_path, capsys):
    """lr 1e6 kills every unit: the gradient is exactly 0 from step 2 on, said once."""
    run_train(sft_config(tmp_path / "run", "train.learning_rate=1e6", "train.save_every=0"))
    assert capsys.readouterr().out.count("the gradient is exactly 0 at a non-zero loss") == 1


def test_ppo_stops_on_a_non_finite_loss(tmp_path, monkeypatch):
    from alignkit.train import ppo

    original = ppo.minibatch_loss

    def inf_loss(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        return loss * math.inf, stats

    monkeypatch.setattr(ppo, "minibatch_loss", inf_loss)
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"^step 1: the loss"):
        run_train(ppo_config(run))
    assert not (run / "final").exists()
