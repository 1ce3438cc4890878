"""The two-group review task of MaxMin-RLHF: who labels a pair, and with which function."""

from __future__ import annotations

import json

import pytest

from alignkit.demo.maxmin import (
    MAJORITY,
    MaxMinExperiment,
    annotators,
    brevity,
    build_task,
    format_table,
    label_pairs,
    min_group_share,
    negativity,
    run_experiment,
)

ROW = {"prompt": "I watched this movie.", "responses": [" It was great and wonderful!", " Bad.", " It was fine I guess."]}


def test_annotators_have_the_minority_share_and_are_seeded():
    groups = annotators(20, 0.25, seed=0)
    assert len(groups) == 20 and sum(g == "brevity" for g in groups.values()) == 5
    assert groups == annotators(20, 0.25, seed=0) and groups != annotators(20, 0.25, seed=1)


def test_brevity_is_minus_the_words():
    assert brevity(["p", "p"], ["one two three", ""]) == [-3.0, -0.0]


def test_a_minority_annotator_prefers_the_shorter_response():
    """brevity: -5, -1, -5. Pairs (0, 1) and (1, 2): ' Bad.' wins; (0, 2) is a tie (5 words each): skipped."""
    rows = label_pairs([ROW], {"a00": "brevity"}, seed=0)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [(" Bad.", ROW["responses"][0]), (" Bad.", ROW["responses"][2])]
    assert all(r["annotator"] == "a00" and r["group"] == "brevity" for r in rows)


def test_a_majority_annotator_prefers_the_more_positive_response():
    """VADER: 'great and wonderful!' > 'fine I guess' (mildly positive) > 'Bad.' (negative)."""
    rows = label_pairs([ROW], {"a00": MAJORITY}, seed=0)
    r = ROW["responses"]
    assert [(x["chosen"], x["rejected"]) for x in rows] == [(r[0], r[1]), (r[0], r[2]), (r[2], r[1])]


def test_a_critic_prefers_the_more_negative_response():
    """negativity = -VADER, so the majority's order reversed: 'Bad.' > 'fine I guess' > 'great and wonderful!'."""
    groups = annotators(1, 1.0, seed=0, minority="negativity")
    assert groups == {"a00": "negativity"}
    rows = label_pairs([ROW], groups, seed=0)
    r = ROW["responses"]
    assert [(x["chosen"], x["rejected"]) for x in rows] == [(r[1], r[0]), (r[2], r[0]), (r[1], r[2])]
    assert negativity(["p"], [r[0]]) == [pytest.approx(-0.8439, abs=1e-4)]


def test_an_unknown_minority_preference_is_refused(tmp_path):
    with pytest.raises(ValueError, match="minority 'verbosity': choose one of brevity, negativity"):
        build_task(tmp_path, minority="verbosity")


def test_pairs_are_deterministic_in_the_seed():
    groups = annotators(4, 0.5, seed=0)
    assert label_pairs([ROW] * 5, groups, seed=3) == label_pairs([ROW] * 5, groups, seed=3)


def test_table_reports_mean_and_sd_over_seeds():
    result = {"seed": 0, "rewards": {k: {MAJORITY: 0.1, "brevity": -10.0} for k in ("start", "baseline", "maxmin")},
              "clustering_accuracy": 0.9}
    other = {"seed": 1, "rewards": {k: {MAJORITY: 0.3, "brevity": -12.0} for k in ("start", "baseline", "maxmin")},
             "clustering_accuracy": 1.0}
    table = format_table([result, other])
    assert "| MaxMin-RLHF | +0.200 ± 0.141 | -11.000 ± 1.414 |" in table
    assert "EM clustering accuracy (annotators): 0.950 ± 0.071 over 2 seeds (per seed: 0.90, 1.00)" in table
    assert "| 1 | 1.00 | +0.300 / -12.00 | +0.300 / -12.00 |" in table


def test_table_shows_the_learned_rewards_by_true_group_and_the_minimums_share():
    """Learned group 0 is the minority here, so the columns read group_1 / group_0 (majority / minority)."""
    rewards = {k: {MAJORITY: 0.5, "brevity": -9.0, "learned/group_0": v, "learned/group_1": 2 * v}
               for k, v in (("start", 0.0), ("baseline", 0.25), ("maxmin", 1.0))}
    result = {"seed": 3, "rewards": rewards, "clustering_accuracy": 1.0, "group_truth": ["brevity", MAJORITY],
              "min_group_share": [0.75, 0.25]}
    table = format_table([result])
    assert "| 3 | +0.00 / +0.00 | +0.50 / +0.25 | +2.00 / +1.00 | 25% / 75% |" in table


def test_min_group_share_counts_the_steps_of_each_group(tmp_path):
    """Steps with min_group 1, 0, 1, 1 (and a step without the key): group 0 on 1 of 4, group 1 on 3 of 4."""
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [{"step": 1, "reward/min_group": 1.0}, {"step": 2,
                   "reward/min_group": 0.0}, {"step": 3, "reward/min_group": 1.0}, {"step": 4, "reward/min_group": 1.0},
                   {"step": 4, "eval": 1}]))
    assert min_group_share(log, 2) == [0.25, 0.75]


@pytest.mark.slow
def test_the_experiment_runs_end_to_end_on_a_small_budget(tmp_path):
    """`alignkit demo --task maxmin` with 2 RL steps: every row of the table gets numbers."""
    exp = MaxMinExperiment(output_dir=str(tmp_path), seeds=[0], rl_steps=2, eval_samples=1)
    table = run_experiment(exp)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results[0]["rewards"]) == {"start", "baseline", "maxmin"}
    assert "| MaxMin-RLHF |" in table and (tmp_path / "table.md").is_file()
    assert 0.5 <= results[0]["clustering_accuracy"] <= 1.0
    assert sum(results[0]["min_group_share"]) == pytest.approx(1.0)
    assert {"learned/group_0", "learned/group_1"} <= set(results[0]["rewards"]["maxmin"])


def test_minority_is_a_maxmin_flag_only(capsys):
    from alignkit.cli import main

    assert main(["demo", "--task", "reviews", "--minority", "negativity"]) == 2
    assert "--minority applies to --task maxmin only" in capsys.readouterr().err
