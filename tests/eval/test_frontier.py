"""Frontiers, reading a reward at a KL budget, bootstrap intervals and significance, worked by hand."""

import numpy as np
import pytest

from alignkit.eval.frontier import (
    MethodRuns,
    default_budget,
    frontier,
    matched_kl,
    mean_and_se,
    percentile_interval,
    read_at,
)

# (KL, reward): (2, 0.5) is beaten by (1, 1); (4, 1.8) by (3, 2).
POINTS = [(1.0, 1.0), (2.0, 0.5), (3.0, 2.0), (0.0, 0.0), (4.0, 1.8)]


def test_frontier_keeps_the_non_dominated_points_by_kl():
    assert frontier(POINTS) == [(0.0, 0.0), (1.0, 1.0), (3.0, 2.0)]
    assert frontier([(1.0, 1.0), (1.0, 3.0)]) == [(1.0, 3.0)]  # same KL: the higher reward


def test_read_at_interpolates_and_never_extrapolates():
    assert read_at(POINTS, 2.0) == pytest.approx(1.5)  # halfway from (1, 1) to (3, 2)
    assert read_at(POINTS, 0.5) == pytest.approx(0.5)  # halfway from (0, 0) to (1, 1)
    assert read_at(POINTS, 1.0) == pytest.approx(1.0)
    assert read_at(POINTS, 3.5) == pytest.approx(2.0)  # reached (max KL 4); (3, 2) is within the budget
    assert read_at(POINTS, 4.5) is None  # never reaches KL 4.5
    assert read_at([(1.0, 1.0), (2.0, 2.0)], 0.5) is None  # below the smallest KL: not extrapolated


def _runs(**settings):
    """settings: name -> (reward [S, P], kl [S, P])."""
    return MethodRuns(
        reward={k: np.asarray(v[0], float) for k, v in settings.items()},
        kl={k: np.asarray(v[1], float) for k, v in settings.items()},
    )


def test_mean_and_se_over_prompts_of_seed_means():
    # seeds [[1, 3], [3, 5]] -> per-prompt means [2, 4]: mean 3, sd sqrt(2), s.e. sqrt(2)/sqrt(2) = 1
    assert mean_and_se(np.array([[1.0, 3.0], [3.0, 5.0]])) == pytest.approx((3.0, 1.0))


def test_percentile_interval_of_a_two_prompt_bootstrap():
    """Means of 2 prompts [0, 1] resampled: 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    2.5% and 97.5% quantiles of many replicates are 0 and 1."""
    rng = np.random.default_rng(0)
    data = np.array([0.0, 1.0])
    means = [data[rng.integers(0, 2, 2)].mean() for _ in range(2000)]
    assert percentile_interval(means) == (0.0, 1.0)
    assert percentile_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.5) == (2.0, 4.0)  # quantiles 0.25, 0.75


def test_matched_kl_reads_each_frontier_at_the_budget_with_intervals_and_significance():
    """Four prompts. A: settings at KL 1 and 3 with rewards 1 and 2 on every prompt, so it reads
    1.5 at KL 2 and its interval is exactly [1.5, 1.5]. B: one setting at KL 2 whose per-prompt
    rewards are 1.5 +- 1 (mean 1.5): no better or worse than A, not significant. C: reward 0.5
    everywhere at KL 2: A - C = 1 in every replicate, significant. D reaches only KL 1: never."""
    ones = np.ones((1, 4))
    methods = {
        "A": _runs(lo=(ones * 1, ones * 1), hi=(ones * 2, ones * 3)),
        "B": _runs(only=([[2.5, 0.5, 2.5, 0.5]], ones * 2)),
        "C": _runs(only=(ones * 0.5, ones * 2)),
        "D": _runs(only=(ones * 9, ones * 1)),
    }
    table = matched_kl(methods, budget=2.0, replicates=400, seed=0)
    rows = {r.method: r for r in table.rows}
    assert [r.method for r in table.rows] == ["A", "B", "C", "D"]  # best first (ties by order given), never last
    assert rows["A"].reward == pytest.approx(1.5) and rows["A"].interval == pytest.approx((1.5, 1.5))
    assert rows["B"].reward == pytest.approx(1.5) and not rows["B"].significant
    assert rows["B"].delta[0] < 0 < rows["B"].delta[1]
    assert rows["C"].significant and rows["C"].delta == pytest.approx((1.0, 1.0))
    assert rows["D"].reward is None and rows["D"].max_kl == 1.0
    again = matched_kl(methods, budget=2.0, replicates=400, seed=0)
    assert [r.interval for r in again.rows] == [r.interval for r in table.rows]  # fixed seed: reproducible
    assert default_budget(methods) == 1.0  # D's largest KL


def test_the_start_model_anchors_every_frontier_at_kl_zero():
    ones = np.ones((2, 3))
    methods = {"A": _runs(only=(ones * 2.0, ones * 4.0))}
    table = matched_kl(methods, start_reward=np.zeros(3), budget=1.0, replicates=50)
    assert table.rows[0].reward == pytest.approx(0.5)  # a quarter of the way from (0, 0) to (4, 2)
    assert matched_kl(methods, budget=1.0, replicates=10).rows[0].reward is None


def test_label_offsets_keep_labels_of_coincident_points_apart():
    """Two labels 20 x 7 points at the same point: the first takes right-above (4, 5), whose box
    (4..24, 5..12) clears the marker (-3.5..3.5); the second would overlap it there, and right-below
    (4, -12) gives the box (4..24, -12..-5), free. A lone third point far away keeps (4, 5)."""
    from alignkit.eval.frontier_report import label_offsets

    offsets = label_offsets([(0.0, 0.0), (0.0, 0.0), (200.0, 200.0)], [20.0, 20.0, 20.0], 7.0)
    assert offsets == [(4, 5), (4, -12), (4, 5)]


def test_label_offsets_avoid_a_neighbouring_marker():
    """A label 30 points wide at (0, 0) placed right-above spans x 4..34, y 5..12; a marker at
    (20, 8) (box 16.5..23.5 x 4.5..11.5) sits inside it, so the label goes right-below (4, -12) instead."""
    from alignkit.eval.frontier_report import label_offsets

    assert label_offsets([(0.0, 0.0), (20.0, 8.0)], [30.0, 5.0], 7.0)[0] == (4, -12)


def test_matched_kl_of_a_lower_is_better_metric_picks_the_lowest():
    """Error rates at KL 2 on four prompts: E 0.1 everywhere, F 0.3 everywhere. The lowest is best, reported in
    its own sign: E 0.1 first, F 0.3 with best - F = -0.2 in every replicate (significant)."""
    ones = np.ones((1, 4))
    methods = {"F": _runs(only=(ones * 0.3, ones * 2)), "E": _runs(only=(ones * 0.1, ones * 2))}
    table = matched_kl(methods, budget=2.0, replicates=50, seed=0, lower_is_better=True)
    assert [(r.method, r.reward) for r in table.rows] == [("E", pytest.approx(0.1)), ("F", pytest.approx(0.3))]
    assert table.rows[0].interval == pytest.approx((0.1, 0.1))
    assert table.rows[1].delta == pytest.approx((-0.2, -0.2)) and table.rows[1].significant
