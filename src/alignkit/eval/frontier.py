"""Reward–KL frontiers and the matched-KL comparison (pure functions over per-prompt numbers).

A method run at several settings of its KL knob (DPO's beta, PPO's KL coefficient, RAFT's
stages, ...) and several seeds gives one point per setting: the mean reward and the mean
KL(pi || pi_start) of its samples, averaged over seeds and prompts. Its **frontier** is the
set of points that no other point of the same method beats on both axes (higher reward at
no larger KL), joined in order of KL; the starting model is every method's point at KL 0.

**Matched KL.** At a KL budget ``b`` a method's reward is read off its own frontier: linear
interpolation between the two frontier points around ``b``; past its last frontier point and
up to the largest KL it reached, the last frontier reward (it reaches that reward within the
budget); past the largest KL it reached, nothing: the method *never reaches* the budget, and
no value is extrapolated. The default budget is the largest KL every method reaches.

**Intervals** are percentile bootstrap intervals: one replicate resamples the prompts (the
same draw for every method, since all are evaluated on the same prompts, so differences are
paired) and, per method, its seeds, then reads every method at the budget again. A
difference from the best method is **significant** when the interval of the replicate
differences excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]  # (KL, reward)


def frontier(points: Sequence[Point]) -> list[Point]:
    """The non-dominated points, by increasing KL: each has a higher reward than every point at lower or equal KL."""
    out: list[Point] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:  # at equal KL the sort puts the higher reward first
            out.append((x, y))
    return out


def read_at(points: Sequence[Point], budget: float) -> float | None:
    """Reward of the frontier of ``points`` at KL ``budget``; None when no point reaches it, or lies below it."""
    if not points or budget > max(p[0] for p in points) or budget < min(p[0] for p in points):
        return None
    front = frontier(points)
    if budget >= front[-1][0]:
        return front[-1][1]
    for (x0, y0), (x1, y1) in zip(front, front[1:]):
        if x0 <= budget <= x1:
            return y0 + (y1 - y0) * (budget - x0) / (x1 - x0)
    return front[0][1]  # budget == the first point's KL


@dataclass
class MethodRuns:
    """One method's measurements: per setting, arrays ``[seeds, prompts]`` of per-prompt mean reward and KL."""

    reward: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]


def setting_points(runs: MethodRuns, prompts: np.ndarray | None = None, seeds: dict | None = None) -> list[Point]:
    """(mean KL, mean reward) per setting over the chosen prompt and seed indices (all when None)."""
    pts = []
    for name in runs.reward:
        r, k = runs.reward[name], runs.kl[name]
        s = (seeds or {}).get(name, slice(None))
        p = slice(None) if prompts is None else prompts
        pts.append((float(k[s][:, p].mean()), float(r[s][:, p].mean())))
    return pts


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean of ``[seeds, prompts]`` and its standard error over prompts of the seed-averaged values."""
    per_prompt = values.mean(axis=0)
    se = float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))) if len(per_prompt) > 1 else 0.0
    return float(values.mean()), se


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear interpolation)."""
    a = np.asarray(values, dtype=float)
    return float(np.quantile(a, (1 - level) / 2)), float(np.quantile(a, (1 + level) / 2))


@dataclass
class MatchedRow:
    method: str
    reward: float | None  # read off the frontier at the budget (None: never reaches it)
    interval: tuple[float, float] | None  # bootstrap interval of ``reward``
    max_kl: float  # the largest KL the method reached
    delta: tuple[float, float] | None = None  # interval of best - this method (None for the best)
    significant: bool = False  # that interval excludes 0


@dataclass
class MatchedTable:
    budget: float
    rows: list[MatchedRow] = field(default_factory=list)  # best first; methods that never reach it last
    replicates: int = 0
    level: float = 0.95


def default_budget(methods: dict[str, MethodRuns]) -> float:
    """The largest KL every method reaches: the smallest of the methods' largest KL."""
    return min(max(p[0] for p in setting_points(r)) for r in methods.values())


def matched_kl(
    methods: dict[str, MethodRuns],
    start_reward: np.ndarray | None = None,
    budget: float | None = None,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    lower_is_better: bool = False,
) -> MatchedTable:
    """Each method's reward at KL ``budget`` (default :func:`default_budget`), with bootstrap intervals.

    ``start_reward`` ``[prompts]``: the starting model's per-prompt reward, every method's point
    at KL 0 (without it, a budget below a method's smallest KL reads nothing).
    ``lower_is_better`` (an error rate): read off the frontier of the negated values, the best method
    being the lowest, and reported in the metric's own sign (``delta``: best - method, then <= 0).
    """
    if lower_is_better:
        negated = {g: MethodRuns({s: -v for s, v in r.reward.items()}, r.kl) for g, r in methods.items()}
        table = matched_kl(negated, None if start_reward is None else -start_reward, budget, replicates, seed, level)
        table.rows = [_negated_row(r) for r in table.rows]
        return table
    budget = default_budget(methods) if budget is None else budget
    n_prompts = next(iter(next(iter(methods.values())).reward.values())).shape[1]

    def read_all(prompts, seeds) -> dict[str, float | None]:
        out = {}
        for name, runs in methods.items():
            pts = setting_points(runs, prompts, seeds.get(name) if seeds else None)
            if start_reward is not None:
                pts.append((0.0, float(start_reward[slice(None) if prompts is None else prompts].mean())))
            out[name] = read_at(pts, budget)
        return out

    estimate = read_all(None, None)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float | None]] = {name: [] for name in methods}
    for _ in range(replicates):
        prompts = rng.integers(0, n_prompts, n_prompts)
        seeds = {
            name: {s: rng.integers(0, a.shape[0], a.shape[0]) for s, a in runs.reward.items()}
            for name, runs in methods.items()
        }
        for name, value in read_all(prompts, seeds).items():
            boots[name].append(value)
    reached = sorted((n for n in methods if estimate[n] is not None), key=lambda n: -estimate[n])
    table = MatchedTable(budget, replicates=replicates, level=level)
    best = reached[0] if reached else None
    for name in reached + [n for n in methods if estimate[n] is None]:
        max_kl = max(p[0] for p in setting_points(methods[name]))
        if estimate[name] is None:
            table.rows.append(MatchedRow(name, None, None, max_kl))
            continue
        got = [v for v in boots[name] if v is not None]
        row = MatchedRow(name, estimate[name], percentile_interval(got, level) if got else None, max_kl)
        if name != best:
            diffs = [b - v for b, v in zip(boots[best], boots[name]) if b is not None and v is not None]
            if diffs:
                row.delta = percentile_interval(diffs, level)
                row.significant = row.delta[0] > 0 or row.delta[1] < 0
        table.rows.append(row)
    return table


def _negated_row(row: MatchedRow) -> MatchedRow:
    """``row`` of negated values in the values' own sign (intervals flip their ends)."""
    def flip(pair):
        return None if pair is None else (-pair[1], -pair[0])

    return MatchedRow(row.method, None if row.reward is None else -row.reward, flip(row.interval), row.max_kl,
                      flip(row.delta), row.significant)
