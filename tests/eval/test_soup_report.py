"""The rewarded-soups report's math by hand: the LMC gap and its interval, the verdict, and the gap
between the soup front and the MORL front."""

import math

import numpy as np
import pytest

from alignkit.eval.soup_report import Point, lmc_check, lmc_verdict, mean_se, preference_gaps


def test_lmc_gap_and_interval_by_hand():
    """Two prompts. Model 1 (lambda 1): [1, 3]; model 2 (lambda 0): [0, 1]; the half soup: [1, 1].
    Line at 0.5: [0.5, 2]; gaps [0.5, -1]: mean -0.25, s.e. std([0.5, -1], ddof=1) / sqrt(2)
    = 1.06066 / 1.41421 = 0.75, interval -0.25 -+ 1.96 * 0.75 = [-1.72, 1.22]."""
    soups = [np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 3.0])]
    points = lmc_check(soups, [0.0, 0.5, 1.0])
    mid = points[1]
    assert mid.line == pytest.approx(1.25) and mid.soup == pytest.approx(1.0)
    assert mid.gap == pytest.approx(-0.25) and mid.se == pytest.approx(0.75)
    assert (mid.low, mid.high) == (pytest.approx(-1.72), pytest.approx(1.22))
    assert points[0].gap == points[2].gap == 0.0 and points[0].se == 0.0  # the endpoints are the line
    verdict = lmc_verdict(points)
    assert verdict.held and verdict.below == [] and verdict.above == [] and verdict.mean_gap == pytest.approx(-0.25)


def test_lmc_verdict_fails_only_when_the_interval_is_below_zero():
    """Soup at 0.25 and 0.75 below the line on every prompt by 1 (+- 0.1): significantly below; above by 1: held."""
    ends = {1.0: np.array([2.0, 2.0, 2.0]), 0.0: np.array([0.0, 0.0, 0.0])}
    line = {0.25: 0.5, 0.75: 1.5}  # 0.25 * 2 + 0.75 * 0, 0.75 * 2

    def soups(shift):
        inner = {lam: line[lam] + shift + np.array([-0.1, 0.0, 0.1]) for lam in line}
        lams = [0.0, 0.25, 0.75, 1.0]
        return [({**ends, **inner})[lam] for lam in lams], lams

    below = lmc_verdict(lmc_check(*soups(-1.0)))
    assert not below.held and below.below == [0.25, 0.75] and below.mean_gap == pytest.approx(-1.0)
    above = lmc_verdict(lmc_check(*soups(+1.0)))
    assert above.held and above.above == [0.25, 0.75]
    with pytest.raises(ValueError, match="endpoints"):
        lmc_check([np.zeros(2)], [0.5])


def test_mean_se_by_hand():
    """[1, 2, 3, 6]: mean 3, std (ddof 1) sqrt((4 + 1 + 0 + 9) / 3) = 2.1602, s.e. 2.1602 / 2 = 1.0801."""
    mean, se = mean_se(np.array([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert mean_se(np.array([4.0])) == (4.0, 0.0)


def test_preference_gap_reads_the_best_soup_for_each_mu():
    """R1, R2 per prompt (2 prompts). Soups: l=1 (R1 [1, 1], R2 [0, 0]), l=0.5 ([0.6, 0.6], [0.6, 0.4]),
    l=0 ([0, 0], [1, 1]). MORL mu=0.5 run: R1 [0.4, 0.4], R2 [0.4, 0.4] -> 0.5*0.4 + 0.5*0.4 = 0.4.
    Soups at mu=0.5: 0.5, [0.6, 0.5] (mean 0.55), 0.5: the best is l=0.5; gap per prompt [0.2, 0.1]:
    mean 0.15, s.e. std([0.2, 0.1], ddof=1) / sqrt(2) = 0.0707 / 1.414 = 0.05."""
    names = ["r1", "r2"]

    def pt(r1, r2):
        return Point("", {"r1": np.array(r1), "r2": np.array(r2)})

    soups = [pt([1.0, 1.0], [0.0, 0.0]), pt([0.6, 0.6], [0.6, 0.4]), pt([0.0, 0.0], [1.0, 1.0])]
    (gap,) = preference_gaps(soups, [1.0, 0.5, 0.0], [(0.5, pt([0.4, 0.4], [0.4, 0.4]))], names)
    assert gap.soup_lam == 0.5 and gap.morl == pytest.approx(0.4) and gap.morl_se == pytest.approx(0.0)
    assert gap.soup == pytest.approx(0.55) and gap.gap == pytest.approx(0.15) and gap.se == pytest.approx(0.05)
