"""Evaluation metrics on tiny inputs, with the counts worked out by hand."""

import math

import pytest
import torch

from alignkit.eval.metrics import (
    best_for_preference,
    distinct_n,
    kendall_tau,
    mean_and_stderr,
    mean_length,
    msttr,
    pareto_front,
    perplexity,
    preference_accuracy,
    simplex_grid,
    unique_n,
    win_rate,
)

TEXTS = ["a b a", "B c"]  # lower-cased tokens: [a, b, a] and [b, c]


def test_distinct_n_by_hand():
    """unigrams: a, b, a, b, c -> 5 in total, {a, b, c} distinct: 3/5
    bigrams within texts: (a b), (b a) | (b c) -> 3 total, all distinct: 3/3
    (the cross-text bigram (a b) from "...a" + "b..." is never formed)
    trigrams: (a b a) only -> 1/1; 4-grams: none -> 0.0"""
    assert distinct_n(TEXTS, 1) == pytest.approx(3 / 5)
    assert distinct_n(TEXTS, 2) == 1.0
    assert distinct_n(TEXTS, 3) == 1.0
    assert distinct_n(TEXTS, 4) == 0.0


def test_unique_n_by_hand():
    """unigram counts a:2, b:2, c:1 -> only c occurs once: 1
    bigrams (a b), (b a), (b c) each once: 3
    with a third text "a b": (a b) now occurs twice -> 2"""
    assert unique_n(TEXTS, 1) == 1
    assert unique_n(TEXTS, 2) == 3
    assert unique_n(TEXTS + ["a b"], 2) == 2


def test_msttr_by_hand():
    """tokens a b a b c (5), window 2: segments [a b], [a b], dropped [c]
    TTRs 2/2, 2/2 -> 1.0. window 3: [a b a] -> 2/3, dropped [b c] -> 2/3.
    window 10 > 5 tokens: no full segment, the TTR of everything: 3/5."""
    assert msttr(TEXTS, window=2) == 1.0
    assert msttr(TEXTS, window=3) == pytest.approx(2 / 3)
    assert msttr(TEXTS, window=10) == pytest.approx(3 / 5)
    assert math.isnan(msttr(["", "  "], window=2))


def test_msttr_averages_segments():
    """tokens x x y z, window 2: [x x] -> 1/2, [y z] -> 2/2; mean 0.75."""
    assert msttr(["x x", "y z"], window=2) == pytest.approx(0.75)


def test_custom_tokenizer_and_mean_length():
    """Characters as tokens: "aba" -> a b a, "bc" -> b c: distinct-1 3/5 again.
    mean length in whitespace tokens: (3 + 2) / 2 = 2.5; in characters "a b a" has 5 -> (5 + 3) / 2 = 4."""
    assert distinct_n(["aba", "bc"], 1, tokenizer=list) == pytest.approx(3 / 5)
    assert mean_length(TEXTS) == 2.5
    assert mean_length(TEXTS, tokenizer=list) == 4.0
    assert math.isnan(mean_length([]))


def test_perplexity():
    """exp(6 / 3) = e^2 = 7.389056; nll 0 -> 1."""
    assert perplexity(6.0, 3) == pytest.approx(math.exp(2))
    assert perplexity(torch.tensor(0.0), torch.tensor(10)) == 1.0
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_mean_and_stderr_by_hand():
    """[1, 2, 3, 6]: mean 3; sample var (4 + 1 + 0 + 9)/3 = 14/3; stderr sqrt(14/3 / 4) = 1.080123."""
    mean, se = mean_and_stderr([1, 2, 3, 6])
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 12))
    mean, se = mean_and_stderr([5.0])
    assert mean == 5.0 and math.isnan(se)
    assert all(math.isnan(v) for v in mean_and_stderr([]))


def test_win_rate_by_hand():
    """diffs = [1, -1, 0, 0.05, -0.5]; tie_eps = 0: win 2, loss 2, tie 1 -> (2 + 0.5)/5 = 0.5
    tie_eps = 0.1: 0.05 becomes a tie: win 1, tie 2, loss 2 -> (1 + 1)/5 = 0.4"""
    model, base = [2.0, 0.0, 1.0, 1.05, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]
    assert win_rate(model, base) == {"win": 2, "tie": 1, "loss": 2, "win_rate": 0.5, "n": 5}
    assert win_rate(model, base, tie_eps=0.1) == {"win": 1, "tie": 2, "loss": 2, "win_rate": 0.4, "n": 5}
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_preference_accuracy_by_hand():
    """row 0: targets [3, 2, 1], scores [0.9, 0.1, 0.5]; pairs (0,1) right, (0,2) right, (1,2) wrong.
    row 1: targets [1, 1, 0 | pad], scores [0, 5, 5 | 99]; (0,1) tied target skipped,
           (0,2) wrong (0 < 5), (1,2) scores tie -> 1/2; the padding makes no pair.
    accuracy = (1 + 1 + 0 + 0 + 0.5) / 5 = 0.5"""
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.0, 5.0, 5.0, 99.0]])
    targets = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 0.0, 7.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    assert preference_accuracy(scores, targets, mask) == pytest.approx(0.5)
    assert preference_accuracy([[1.0, 0.0]], [[1.0, 0.0]]) == 1.0
    assert math.isnan(preference_accuracy([[1.0, 0.0]], [[2.0, 2.0]]))


def test_pareto_front_by_hand():
    """(1, 5) (3, 3) (5, 1) trade off; (2, 2) is dominated by (3, 3); (3, 3) again is a duplicate
    (kept); (5, 0) is dominated by (5, 1) (equal in one coordinate, worse in the other)."""
    points = [(1, 5), (2, 2), (3, 3), (5, 1), (3, 3), (5, 0)]
    assert pareto_front(points) == [0, 2, 3, 4]
    assert pareto_front([]) == []


def test_best_for_preference():
    """mu = (0.5, 0.5): utilities 3, 2, 3, 3 -> first best is 0; mu = (1, 0) -> 5 at index 3;
    mu = (0.2, 0.8): 4.2, 2, 3, 1.8 -> 0."""
    points = [(1, 5), (2, 2), (3, 3), (5, 1)]
    assert best_for_preference(points, (0.5, 0.5)) == 0
    assert best_for_preference(points, (1.0, 0.0)) == 3
    assert best_for_preference(points, (0.2, 0.8)) == 0
    with pytest.raises(ValueError):
        best_for_preference(points, (1.0,))


def test_simplex_grid():
    """n=2, steps=4 -> C(5, 1) = 5 points; n=3, steps=2 -> C(4, 2) = 6 points."""
    grid = simplex_grid(2, 4)
    assert grid == [(0.0, 1.0), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25), (1.0, 0.0)]
    grid3 = simplex_grid(3, 2)
    assert len(grid3) == 6 and len(set(grid3)) == 6
    assert set(grid3) == {
        (0.0, 0.0, 1.0),
        (0.0, 0.5, 0.5),
        (0.0, 1.0, 0.0),
        (0.5, 0.0, 0.5),
        (0.5, 0.5, 0.0),
        (1.0, 0.0, 0.0),
    }
    assert len(simplex_grid(4, 5)) == math.comb(5 + 3, 3)
    assert all(sum(w) == pytest.approx(1.0) for w in simplex_grid(4, 5))


def test_error_class_metrics_by_hand():
    """predicted 1 1 0 0 0 vs gold 1 0 1 0 0: tp 1, 2 predicted, 2 labelled errors ->
    precision 1/2, recall 1/2, F1 1/2, accuracy 3/5; predicting no error everywhere: F1 0, accuracy 3/5."""
    from alignkit.eval.metrics import error_class_metrics

    out = error_class_metrics([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    assert out == {"accuracy": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert error_class_metrics([0] * 5, [1, 0, 1, 0, 0]) == {"accuracy": 0.6, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError):
        error_class_metrics([1], [1, 0])


def test_accuracy_threshold_by_hand():
    """p 0.1 0.3 0.35 0.8 with gold 0 1 1 1: t = 0.5 gets 2 of 4 right (only 0.8 called an error);
    the midpoint 0.2 between 0.1 and 0.3 gets all 4. Gold 1 1 with p 0.2 0.4: every t below 0.2 is
    right on both (0.2 - 1e-6). Gold 0 0 with p 0.6 0.7: "nothing is an error" (t = 0.7). Ties: the
    candidate nearest 0.5 (p 0.3 0.7 with gold 0 1: 0.5 and the midpoint 0.5 agree)."""
    from alignkit.eval.metrics import accuracy_threshold

    assert accuracy_threshold([0.1, 0.3, 0.35, 0.8], [0, 1, 1, 1]) == pytest.approx(0.2)
    assert accuracy_threshold([0.2, 0.4], [1, 1]) == pytest.approx(0.2 - 1e-6)
    assert accuracy_threshold([0.6, 0.7], [0, 0]) == pytest.approx(0.7)
    assert accuracy_threshold([0.3, 0.7], [0, 1]) == 0.5
    assert accuracy_threshold([], []) == 0.5
    with pytest.raises(ValueError):
        accuracy_threshold([0.5], [1, 0])


def test_kendall_tau_b_by_hand():
    """The rows of test_preference_accuracy_by_hand.
    row 0: targets [3, 2, 1], scores [0.9, 0.1, 0.5]: pairs (0,1) C, (0,2) C, (1,2) D; no ties:
           tau = (2 - 1) / sqrt(3 * 3) = 1/3.
    row 1: targets [1, 1, 0], scores [0, 5, 5]: (0,1) tied target, (0,2) D, (1,2) tied score:
           tau = (0 - 1) / sqrt((3 - 1) * (3 - 1)) = -1/2.
    mean = (1/3 - 1/2) / 2 = -1/12."""
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.0, 5.0, 5.0, 99.0]])
    targets = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 0.0, 7.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    assert kendall_tau(scores, targets, mask) == pytest.approx(-1 / 12)
    assert kendall_tau([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]) == pytest.approx(1.0)  # same order
    assert kendall_tau([[3.0, 2.0, 1.0]], [[1.0, 2.0, 3.0]]) == pytest.approx(-1.0)  # reversed
    assert math.isnan(kendall_tau([[1.0, 2.0]], [[0.0, 0.0]]))  # all targets tied: no tau
