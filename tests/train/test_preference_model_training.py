"""``method: preference_model``: every ordered pair of a ranked row with equal row weight, the loss by hand,
and a short run on the built-in pairs that reports held-out accuracy and saves a judge."""

import json
import math
from pathlib import Path

import pytest
import torch

from alignkit.config import load_config
from alignkit.data.schema import Example
from alignkit.errors import ConfigError
from alignkit.losses.reward import preference_model_loss
from alignkit.rewards import build_reward
from alignkit.rewards.preference import PreferenceJudge
from alignkit.train.preference_model import ordered_pairs
from alignkit.train.run import run_train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_ranked_rows_give_every_strict_pair_weighted_per_row():
    """Row 0 ranks (a 3, b 1, c 2): pairs a>b, a>c, c>b, weight 1/3 each; row 1 (tie d = e, f below): d>f, e>f."""
    rows = [Example("p", ["a", "b", "c"], [3.0, 1.0, 2.0]), Example("q", ["d", "e", "f"], [1.0, 1.0, 0.0])]
    prompts, better, worse, weights = ordered_pairs(rows)
    assert list(zip(better, worse)) == [("a", "b"), ("a", "c"), ("c", "b"), ("d", "f"), ("e", "f")]
    assert prompts == ["p"] * 3 + ["q"] * 2
    assert weights == pytest.approx([1 / 3] * 3 + [1 / 2] * 2)


def test_loss_by_hand():
    """g = (0, 2) with weights (1, 1/2): (log 2, 0.5 * log(1 + e^-2)) = (0.6931, 0.0635)."""
    out = preference_model_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.5]))
    assert torch.allclose(out, torch.tensor([math.log(2), 0.5 * math.log1p(math.exp(-2))]))


def test_a_loss_section_is_refused(tmp_path):
    cfg = load_config(CONFIGS / "preference_model_tiny.yaml", [f"train.output_dir={tmp_path}", "loss={margin: 1}"])
    with pytest.raises(ConfigError, match="loss: method 'preference_model'"):
        run_train(cfg)


def test_a_sequence_classifier_kind_is_refused(tmp_path):
    cfg = load_config(CONFIGS / "preference_model_tiny.yaml", [f"train.output_dir={tmp_path}",
                                                                "reward_model.kind=classifier"])
    with pytest.raises(ConfigError, match="reward_model.kind: a preference model reads a score at every token"):
        run_train(cfg)


def test_tiny_run_reports_accuracy_and_saves_a_judge(tmp_path, tiny_encoder):
    out = tmp_path / "pm"
    run_train(load_config(CONFIGS / "preference_model_tiny.yaml", [
        f"train.output_dir={out}", f"model.name_or_path={tiny_encoder}", "train.max_steps=2", "train.progress=false",
        "reward_model.max_length=64"]))
    final = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0 <= final["eval/accuracy"] <= 1 and final["eval/pairs"] == 8
    judge = build_reward({"kind": "preference_model", "path": str(out / "final")})
    assert isinstance(judge, PreferenceJudge)
    p = judge.compare(["Human: hi", "Human: hi"], ["Hello!", "Go away."], ["Go away.", "Hello!"])
    assert torch.allclose(p[0] + p[1], torch.tensor(1.0))
    scores = judge.group_scores("Human: hi", ["Hello!", "Go away."])
    assert math.isclose(scores[0] - scores[1], float(judge.logits(["Human: hi"], ["Hello!"], ["Go away."])[0]),
                        abs_tol=1e-5)
    with pytest.raises(ConfigError, match="compares two responses"):
        judge.score(["Human: hi"], ["Hello!"])
