"""Agreement statistics against published worked examples and hand-worked small cases."""

import math

import pytest

from alignkit.label.agreement import (
    krippendorff_alpha,
    majority_agreement,
    pairwise_agreement,
    span_f1,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5, missing values as None (unit 12 has one value: not pairable).
# Published: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
UNITS = list(zip(*OBSERVERS))


@pytest.mark.parametrize("level, published", [
    ("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797),
])
def test_krippendorff_2011_worked_example(level, published):
    assert krippendorff_alpha(UNITS, level) == pytest.approx(published, abs=5e-4)


def test_wikipedia_worked_example_nominal():
    """Wikipedia's "Krippendorff's alpha" example: 3 coders, 15 units (* = missing); published 0.691."""
    coders = [
        "* * * * * 3 4 1 2 1 1 3 3 * 3",
        "1 * 2 1 3 3 4 3 * * * * * * *",
        "* * 2 1 3 4 4 * 2 1 1 3 3 * 4",
    ]
    rows = [[None if v == "*" else int(v) for v in c.split()] for c in coders]
    assert krippendorff_alpha(zip(*rows), "nominal") == pytest.approx(0.691, abs=5e-4)


def test_alpha_by_hand_two_coders_two_units():
    """Units (1, 1) and (1, 2), nominal: o_11 = 2, o_12 = o_21 = 1 -> n_1 = 3, n_2 = 1, n = 4.

    D_o numerator: o_12 + o_21 = 2; D_e numerator: n_1 n_2 + n_2 n_1 = 6.
    alpha = 1 - (n - 1) * 2 / 6 = 1 - 3 * 2 / 6 = 0.
    """
    assert krippendorff_alpha([(1, 1), (1, 2)]) == pytest.approx(0.0)
    assert krippendorff_alpha([(1, 1), (2, 2)]) == pytest.approx(1.0)  # perfect agreement
    assert math.isnan(krippendorff_alpha([(1, 1), (1, 1)]))  # one value only: D_e = 0
    assert math.isnan(krippendorff_alpha([(1, None), (2,)]))  # nothing pairable


def test_pairwise_and_majority_agreement_by_hand():
    units = {
        "u1": {"ann": "A", "bob": "A", "cy": "B"},  # pairs: ann-bob same, ann-cy, bob-cy differ
        "u2": {"ann": "B", "bob": "B"},  # one pair, same
    }
    assert pairwise_agreement(units) == pytest.approx(2 / 4)
    # cy vs the majority of {ann, bob} on u1 (A): disagrees; cy did not label u2
    assert majority_agreement(units, "cy") == 0.0
    # ann: u1 others {A, B} have no strict majority (skipped); u2 other is bob = B: agrees
    assert majority_agreement(units, "ann") == 1.0
    assert math.isnan(majority_agreement(units, "nobody"))


def test_span_f1_by_hand():
    a = [(0, 10, "Irrelevant")]
    b = [(5, 15, "Irrelevant")]  # overlap 5 characters: 2 * 5 / (10 + 10)
    assert span_f1(a, b) == pytest.approx(0.5)
    assert span_f1(a, [(0, 10, "Redundant")]) == 0.0  # same characters, other category
    assert span_f1([], []) == 1.0
    assert span_f1(a, a) == 1.0
