"""The rewarded-soups experiment's report: both fronts, the LMC check, the cost, every point.

Everything is computed from per-prompt rewards (each model's mean over its samples of one
prompt); all models are evaluated on the same prompts with the same sampling seed, so
differences are paired over prompts and standard errors are over prompts.

**LMC check** (Rame et al. 2023, Observation 1 / Lemma 1's hypothesis): for a reward ``R``
and the soup ``theta(l) = l theta_1 + (1 - l) theta_2``, linear mode connectivity says
``R(theta(l)) >= l R(theta_1) + (1 - l) R(theta_2)``. Per prompt ``p`` the gap is
``d_p = R_p(theta(l)) - (l R_p(theta_1) + (1 - l) R_p(theta_2))``; the check reports
``mean(d) +- z se(d)`` (z = 1.96: a 95% normal interval). It *fails* at ``l`` when the
whole interval lies below 0, and it *holds* for the reward when it fails at no ``l``.

**Soup against MORL**: for the preference ``mu`` of a MORL run, both fronts are read as the
scalarised reward ``(1 - mu) R_1 + mu R_2``: the MORL run's, and the best soup's (the grid's
argmax). The gap ``soup - MORL`` (with its paired s.e. over prompts) says how far the soup
front is from the MORL front in the direction MORL optimised.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Z95 = 1.96


@dataclass
class Point:
    """One evaluated model: its label, per-prompt rewards ``{name: [P]}`` and mean KL to the start."""

    label: str
    rewards: dict[str, np.ndarray]
    kl: float | None = None
    steps: int = 0  # training steps this model's own training cost (a soup: 0)


def per_prompt(samples: Sequence[dict], reward: str) -> np.ndarray:
    """The mean of ``reward`` over each prompt's samples (``samples.jsonl`` rows), ``[P]``."""
    return np.array([float(np.mean(s["rewards"][reward])) for s in samples])


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``; 0 for one value)."""
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return float(np.mean(values)), se


# ---------------------------------------------------------------- LMC


@dataclass
class LmcPoint:
    lam: float  # the weight of model 1 in the soup
    soup: float  # mean reward of the soup
    line: float  # l * R(theta_1) + (1 - l) * R(theta_2)
    gap: float  # soup - line, mean over prompts
    se: float  # standard error of the per-prompt gap
    low: float  # gap - z se
    high: float  # gap + z se


def lmc_check(soups: Sequence[np.ndarray], lambdas: Sequence[float], z: float = Z95) -> list[LmcPoint]:
    """The soup's reward against the straight line between the endpoints, per soup of the grid.

    ``soups[g]``: per-prompt rewards ``[P]`` of the soup whose model-1 weight is ``lambdas[g]``;
    the grid must hold both endpoints (``l = 1``: model 1, ``l = 0``: model 2)."""
    ends = {round(lam, 9): s for lam, s in zip(lambdas, soups)}
    if 1.0 not in ends or 0.0 not in ends:
        raise ValueError("the LMC check needs the two endpoints (lambda 1 and 0) in the grid")
    first, second = ends[1.0], ends[0.0]
    out = []
    for lam, soup in zip(lambdas, soups):
        line = lam * first + (1 - lam) * second  # [P]
        gap, se = mean_se(soup - line)
        out.append(LmcPoint(lam, float(soup.mean()), float(line.mean()), gap, se, gap - z * se, gap + z * se))
    return out


@dataclass
class LmcVerdict:
    held: bool  # no interior soup is significantly below the line
    below: list[float]  # the lambdas where it is significantly below
    above: list[float]  # the lambdas where it is significantly above
    mean_gap: float  # mean gap over the interior soups


def lmc_verdict(points: Sequence[LmcPoint]) -> LmcVerdict:
    inner = [p for p in points if 0 < p.lam < 1]
    below = [p.lam for p in inner if p.high < 0]
    above = [p.lam for p in inner if p.low > 0]
    mean_gap = float(np.mean([p.gap for p in inner])) if inner else 0.0
    return LmcVerdict(not below, below, above, mean_gap)


# ---------------------------------------------------------------- soup front against MORL front


@dataclass
class PreferenceGap:
    mu: float  # the preference: weight of reward 2
    morl: float  # (1 - mu) R_1 + mu R_2 of the MORL run
    morl_se: float
    soup_lam: float  # model-1 weight of the best soup for mu
    soup: float  # its scalarised reward
    gap: float  # soup - MORL (mean over prompts of the paired difference)
    se: float


def scalarised(point: Point, names: Sequence[str], mu: float) -> np.ndarray:
    return (1 - mu) * point.rewards[names[0]] + mu * point.rewards[names[1]]


def preference_gaps(soups: Sequence[Point], lambdas: Sequence[float], morl: Sequence[tuple[float, Point]],
                    names: Sequence[str]) -> list[PreferenceGap]:
    """Per MORL run (``mu``, point): its scalarised reward, the best soup's, and the gap between them."""
    out = []
    for mu, run in morl:
        values = [scalarised(s, names, mu) for s in soups]
        best = int(np.argmax([v.mean() for v in values]))
        target = scalarised(run, names, mu)
        gap, se = mean_se(values[best] - target)
        out.append(PreferenceGap(mu, *mean_se(target), lambdas[best], float(values[best].mean()), gap, se))
    return out


# ---------------------------------------------------------------- plot and report


def _xy(point: Point, names: Sequence[str]) -> tuple[float, float, float, float]:
    (x, xse), (y, yse) = mean_se(point.rewards[names[0]]), mean_se(point.rewards[names[1]])
    return x, xse, y, yse


def plot_fronts(soups: Sequence[Point], morl: Sequence[Point], start: Point | None, names: Sequence[str],
                path: Path) -> Path:
    """Reward 2 against reward 1: the soups joined in lambda order, the MORL runs in mu order, +- 1 s.e."""
    from alignkit.eval.report import _pyplot, _save

    plt = _pyplot()
    from alignkit.eval.frontier_report import annotate_apart

    fig, ax = plt.subplots(figsize=(7, 5.2))
    labels = []
    for points, style, color, name in (
        (soups, "-o", "crimson", f"rewarded soups, λ = weight of the {names[0]} model (2 trainings)"),
        (morl, "--s", "navy", f"MORL on (1-μ) {names[0]} + μ {names[1]} ({len(morl)} trainings)"),
    ):
        if not points:
            continue
        xs, xse, ys, yse = zip(*(_xy(p, names) for p in points))
        ax.errorbar(xs, ys, xerr=xse, yerr=yse, fmt=style, color=color, capsize=2, markersize=5, label=name)
        labels += [(x, y, p.label, color) for p, x, y in zip(points, xs, ys)]
    if start is not None:
        x, xse, y, yse = _xy(start, names)
        ax.errorbar([x], [y], xerr=[xse], yerr=[yse], fmt="D", color="grey", capsize=2, label="start")
    annotate_apart(ax, labels, fontsize=7)  # the fronts share their endpoints: labels placed apart
    ax.set_xlabel(f"reward: {names[0]} (mean ± s.e. over prompts)")
    ax.set_ylabel(f"reward: {names[1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _f(x: float) -> str:
    return f"{x:+.3f}"


def lmc_cells(points: Sequence[LmcPoint]) -> tuple[list[str], list[list[str]]]:
    headers = ["λ (model 1)", "soup", "line", "gap ± s.e.", "95% interval", "verdict"]
    cells = []
    for p in points:
        verdict = "endpoint" if p.lam in (0.0, 1.0) else ("below" if p.high < 0 else
                                                          "above" if p.low > 0 else "on the line")
        cells.append([f"{p.lam:g}", f"{p.soup:.3f}", f"{p.line:.3f}", f"{_f(p.gap)} ± {p.se:.3f}",
                      f"[{_f(p.low)}, {_f(p.high)}]", verdict])
    return headers, cells


def verdict_text(name: str, v: LmcVerdict) -> str:
    if not v.held:
        where = ", ".join(f"{lam:g}" for lam in v.below)
        return (f"LMC failed for {name}: the soup is significantly below the line at λ = {where} "
                f"(mean gap {_f(v.mean_gap)})")
    extra = (f", significantly above it at λ = {', '.join(f'{lam:g}' for lam in v.above)}" if v.above else "")
    return f"LMC held for {name}: no soup significantly below the line (mean gap {_f(v.mean_gap)}{extra})"


def gap_cells(gaps: Sequence[PreferenceGap]) -> tuple[list[str], list[list[str]]]:
    headers = ["μ", "MORL (1-μ)R1+μR2", "best soup λ", "soup (1-μ)R1+μR2", "soup − MORL ± s.e."]
    cells = [[f"{g.mu:g}", f"{g.morl:.3f} ± {g.morl_se:.3f}", f"{g.soup_lam:g}", f"{g.soup:.3f}",
              f"{_f(g.gap)} ± {g.se:.3f}"] for g in gaps]
    return headers, cells


def point_cells(points: Sequence[tuple[str, Point]], names: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["front", "model", *(f"{n} ± s.e." for n in names), "KL to start", "training steps"]
    cells = []
    for front, p in points:
        stats = [mean_se(p.rewards[n]) for n in names]
        cells.append([front, p.label, *(f"{m:.3f} ± {s:.3f}" for m, s in stats),
                      "—" if p.kl is None else f"{p.kl:.2f}", str(p.steps)])
    return headers, cells


@dataclass
class Experiment:
    """What the report shows: the soups (in grid order), the MORL front, the start, and the reward names."""

    names: list[str]
    soups: list[Point]
    lambdas: list[float]  # model-1 weight of each soup
    morl: list[tuple[float, Point]]  # (mu, point), mu = 0 and 1 the ingredients
    start: Point | None
    ingredient_steps: list[int]  # training steps of each ingredient


def write_experiment_report(out: Path, exp: Experiment, title: str) -> dict:
    """``report.md``, ``report.html`` and ``fronts.png`` in ``out``; returns the numbers (for soup.json)."""
    from alignkit.eval.report import html_page, html_table, image_tag, markdown_table

    names = exp.names
    plot = plot_fronts(exp.soups, [p for _, p in exp.morl], exp.start, names, out / "fronts.png")
    checks = {n: lmc_check([s.rewards[n] for s in exp.soups], exp.lambdas) for n in names}
    verdicts = {n: lmc_verdict(points) for n, points in checks.items()}
    gaps = preference_gaps(exp.soups, exp.lambdas, exp.morl, names) if exp.morl else []
    soup_cost = sum(exp.ingredient_steps)
    morl_cost = sum(p.steps for _, p in exp.morl)
    cost_headers = ["front", "trainings", "training steps", "models evaluated"]
    cost_cells = [["rewarded soups", str(len(exp.ingredient_steps)), str(soup_cost), str(len(exp.soups))]]
    if exp.morl:
        cost_cells.append(["MORL", str(len(exp.morl)), str(morl_cost), str(len(exp.morl))])
    rows = ([("start", exp.start)] if exp.start else []) + [("soup", s) for s in exp.soups]
    rows += [("MORL", p) for _, p in exp.morl]
    md, sections = [f"# {title}\n", f"![both fronts]({plot.name})\n"], [("Both fronts", image_tag(plot, "fronts"))]

    def add(heading: str, headers, cells, note: str = "") -> None:
        md.append(f"## {heading}\n\n{note + chr(10) + chr(10) if note else ''}{markdown_table(headers, cells)}")
        sections.append((heading, (f"<p>{html.escape(note)}</p>" if note else "")
                         + f'<div class="scroll">{html_table(headers, cells)}</div>'))

    for n in names:
        add(f"LMC check: {n}", *lmc_cells(checks[n]), note=verdict_text(n, verdicts[n]) + ". Gap: the soup's "
            "reward minus the straight line between the endpoints, paired over prompts, ± 1.96 s.e.")
    if gaps:
        mean_gap = float(np.mean([g.gap for g in gaps]))
        add("Soup front against MORL front", *gap_cells(gaps),
            note=f"For each MORL preference μ: the best soup's (1-μ)R1 + μR2 minus the MORL run's; mean "
                 f"{_f(mean_gap)}.")
    add("Cost of each front", cost_headers, cost_cells,
        note="Training steps: optimizer steps (PPO: iterations) summed over the front's trainings; MORL's μ = 0 "
             "and 1 are the soup's own two fine-tunings.")
    add("Every point", *point_cells(rows, names))
    (out / "report.md").write_text("\n\n".join(md) + "\n")
    (out / "report.html").write_text(html_page(title, sections))
    return {
        "lmc": {n: {"held": v.held, "below": v.below, "above": v.above, "mean_gap": v.mean_gap,
                    "points": [vars(p) for p in checks[n]]} for n, v in verdicts.items()},
        "morl_gap": [vars(g) for g in gaps],
        "cost_steps": {"soup": soup_cost, **({"morl": morl_cost} if exp.morl else {})},
        "report": str(out / "report.html"),
    }
