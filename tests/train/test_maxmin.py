"""method maxmin_reward_models: the EM trainer's plumbing on a tiny two-group file, and the real task (slow)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignkit.config import Config, from_dict, load_config
from alignkit.data.schema import Example
from alignkit.errors import ConfigError, DataError
from alignkit.rewards.base import build_reward
from alignkit.train.maxmin import owners_of
from alignkit.train.methods import method_spec
from alignkit.train.run import run_train


def pair(annotator=None, group=None, source=""):
    meta = {k: v for k, v in (("annotator", annotator), ("group", group)) if v is not None}
    return Example("p", ["a", "b"], scores=[1.0, 0.0], source=source, meta=meta)


def test_owners_are_annotators_in_order_of_appearance_with_their_group():
    owner, names, truth = owners_of([pair("x", "g1"), pair("y", "g2"), pair("x", "g1")])
    assert owner.tolist() == [0, 1, 0] and names == ["x", "y"] and truth == ["g1", "g2"]


def test_without_annotators_each_pair_is_its_own_owner():
    owner, names, truth = owners_of([pair(source="f:1"), pair("x", source="f:2")])
    assert owner.tolist() == [0, 1] and names == ["f:1", "f:2"] and truth is None


def test_an_annotator_in_two_groups_is_a_data_error():
    with pytest.raises(DataError, match="belongs to one group"):
        owners_of([pair("x", "g1", "f:1"), pair("x", "g2", "f:2")])


def test_alignkit_methods_lists_maxmin_with_its_paper(capsys):
    from alignkit.cli import main

    assert main(["methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("maxmin_reward_models"))
    assert "Chakraborty et al. 2024" in line and "2402.08925" in line
    assert method_spec("maxmin_reward_models").paper


POLITE = [" Happy to help, here is a good answer.", " Great question, thank you, gladly.",
          " Sure, with pleasure, a lovely idea."]
CURT = [" No.", " Go away.", " Not now."]


def two_group_file(path):
    """Annotators p0-p2 prefer the polite (longer) answer, b0-b1 the curt (shorter) one: they disagree on
    every pair, so each group's preferences are one model's and not the other's."""
    rows = []
    for i in range(40):
        polite, curt = POLITE[i % 3], CURT[i % 3]
        annotator = ["p0", "p1", "p2", "b0", "b1"][i % 5]
        brief = annotator.startswith("b")
        rows.append({"prompt": f"Question {i}?", "chosen": curt if brief else polite,
                     "rejected": polite if brief else curt, "annotator": annotator,
                     "group": "brevity" if brief else "politeness"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path, data):
    return from_dict(Config, {
        "method": "maxmin_reward_models", "model": {"name_or_path": "minilm"},
        "data": {"train": str(data), "eval_size": 5},
        "reward_model": {"max_length": 32, "center_examples": 8},
        "mixture": {"num_groups": 2, "em_iterations": 2, "init_steps": 2, "m_step_steps": 2},
        "train": {"output_dir": str(tmp_path / "run"), "learning_rate": 5e-5, "schedule": "constant", "batch_size": 4,
                  "progress": False},
    })


def test_tiny_em_run_writes_every_group_model_the_assignments_and_a_min_reward_loads(tmp_path):
    torch.set_num_threads(1)
    run = run_train(tiny_config(tmp_path, two_group_file(tmp_path / "pairs.jsonl")))
    final = run / "final"
    summary = json.loads((final / "mixture.json").read_text())
    assert sorted(summary["owners"]) == ["b0", "b1", "p0", "p1", "p2"]
    assert set(summary["owners"].values()) <= {0, 1} and 1 <= summary["rounds"] <= 2
    assert sum(summary["group_pairs"]) == 35  # 40 rows minus 5 held out
    assert 0.6 <= summary["clustering_accuracy"] <= 1.0  # 3 of 5 in one group is the floor
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(1, summary["rounds"] + 1))
    assert records[-1]["clustering_accuracy"] == summary["clustering_accuracy"]
    assert 0.0 <= summary["heldout_accuracy_mixture"] <= 1.0 and summary["heldout_pairs"] == 5
    for name in ("group_0", "group_1", "pooled"):
        assert (final / name / "alignkit_reward.json").is_file()
    # the pooled fit and every M-step fit are runs of the shared loop, each with its own log
    fits = ["pooled"] + [f"round_{r}_group_{h}" for r in range(1, summary["rounds"] + 1) for h in (0, 1)]
    assert sorted(p.name for p in (run / "fits").iterdir()) == sorted(fits)
    for name in fits:
        steps = [json.loads(x) for x in (run / "fits" / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in steps] == [1, 2]  # init_steps = m_step_steps = 2
        assert all(r["learning_rate"] == 5e-5 and math.isfinite(r["loss"]) and "grad_norm" in r for r in steps)
    reward = build_reward({"kind": "min", "path": str(final), "over": "sample"})
    value, details = reward.score_with_details(["Question 1?"] * 2, [POLITE[0], CURT[0]])
    assert torch.equal(value, torch.minimum(details["group_0"], details["group_1"]))
    # each group model's spread on the centring responses is stored, and the min divides by it
    spreads = [json.loads((final / g / "alignkit_reward.json").read_text())["center_std"] for g in ("group_0", "group_1")]
    assert all(s > 0 for s in spreads) and reward.scales.tolist() == pytest.approx(spreads)


@pytest.mark.parametrize("override", [{"resume": True}, {"save_every": 1}])
def test_resume_and_checkpoints_are_refused(tmp_path, override):
    cfg = tiny_config(tmp_path, two_group_file(tmp_path / "pairs.jsonl"))
    for key, value in override.items():
        setattr(cfg.train, key, value)
    with pytest.raises(ConfigError, match=f"train.{next(iter(override))}: method 'maxmin_reward_models'"):
        run_train(cfg)


def test_more_groups_than_annotators_is_a_data_error(tmp_path):
    cfg = tiny_config(tmp_path, two_group_file(tmp_path / "pairs.jsonl"))
    cfg.mixture.num_groups = 6
    with pytest.raises(DataError, match="num_groups=6"):
        run_train(cfg)


@pytest.mark.slow
def test_em_recovers_the_groups_of_the_review_task(tmp_path):
    """The shipped task (built from the demo cache, which it builds when absent): 20 annotators, 5 of them
    preferring brevity. Measured: clustering accuracy 0.90, held-out pair accuracy 0.78 (mixture) vs 0.66
    (one pooled reward)."""
    from alignkit.demo.maxmin import build_task

    build_task(tmp_path / "task")
    cfg = load_config("configs/maxmin_tiny.yaml", [
        f"model.name_or_path={tmp_path / 'task' / 'base'}", f"data.train={tmp_path / 'task' / 'pairs.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}", "train.progress=false"])
    run_train(cfg)
    summary = json.loads((tmp_path / "run" / "final" / "mixture.json").read_text())
    assert summary["clustering_accuracy"] >= 0.8
    assert summary["heldout_accuracy_mixture"] > summary["heldout_accuracy_pooled"]
    assert sorted(summary["group_truth"]) == ["brevity", "sentiment"]
