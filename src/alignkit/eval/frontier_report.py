"""The frontier part of a compare report: frontier plots and the matched-KL table.

Rows of one method (``ReportRow.group``) at several settings and seeds become one frontier
(:mod:`alignkit.eval.frontier`); the per-prompt rewards and KL come from each run's
``samples.jsonl`` rows, so intervals resample prompts, not samples of one prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignkit.eval.frontier import MatchedTable, MethodRuns, frontier, matched_kl, mean_and_se
from alignkit.rewards.base import lower_is_better


def _per_prompt(samples: list[dict], key: str, reward: str | None = None) -> list[float] | None:
    out = []
    for s in samples:
        values = s.get("rewards", {}).get(reward) if reward else s.get(key)
        values = [v for v in (values or []) if v is not None and math.isfinite(v)]
        if not values:
            return None
        out.append(sum(values) / len(values))
    return out


def method_groups(rows: Sequence, reward: str) -> tuple[dict[str, MethodRuns], np.ndarray | None]:
    """Per method (row group), per setting, ``[seeds, prompts]`` rewards and KL; and the start's rewards.

    Runs that failed, or were evaluated on a different number of prompts than the others, are left out.
    """
    start = next((r for r in rows if r.group == "start" and r.samples), None)
    start_reward = _per_prompt(start.samples, "", reward) if start else None
    n = len(start_reward) if start_reward else None
    cells: dict[str, dict[str, tuple[list, list]]] = {}
    for row in rows:
        if row.group in ("", "start") or not row.samples:
            continue
        rew, kl = _per_prompt(row.samples, "", reward), _per_prompt(row.samples, "kl")
        if rew is None or kl is None or (n is not None and len(rew) != n):
            continue
        n = len(rew)
        r_list, k_list = cells.setdefault(row.group, {}).setdefault(row.setting, ([], []))
        r_list.append(rew)
        k_list.append(kl)
    groups = {
        g: MethodRuns({s: np.array(v[0]) for s, v in per.items()}, {s: np.array(v[1]) for s, v in per.items()})
        for g, per in cells.items()
    }
    return groups, (np.array(start_reward) if start_reward else None)


def matched_tables(
    rows: Sequence, rewards: Sequence[str], budget: float | None, replicates: int
) -> dict[str, MatchedTable]:
    """One matched-KL table per reward (none when no method has KL measurements).

    A lower-is-better metric (a fine-grained model's ``error_rate``) is read off the frontier of its
    negation, the best method being the one with the lowest value, and reported in its own sign.
    """
    out = {}
    for name in rewards:
        groups, start = method_groups(rows, name)
        if groups:
            out[name] = matched_kl(groups, start, budget, replicates=replicates, lower_is_better=lower_is_better(name))
    return out


def _ci(pair: tuple[float, float] | None) -> str:
    return "—" if pair is None else f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def matched_cells(table: MatchedTable, runs: dict[str, MethodRuns]) -> tuple[list[str], list[list[str]]]:
    pct = f"{100 * table.level:.0f}%"
    headers = ["Method", f"Reward at KL {table.budget:.2f}", f"{pct} interval", f"Best − method ({pct})",
               "Largest KL reached", "Settings x seeds"]
    cells = []
    for row in table.rows:
        per = runs[row.method].reward
        shape = f"{len(per)} x {max(a.shape[0] for a in per.values())}"
        if row.reward is None:
            cells.append([row.method, "never reaches it", "—", "—", f"{row.max_kl:.2f}", shape])
            continue
        delta = "(best)" if row.delta is None and row is table.rows[0] else _ci(row.delta)
        cells.append([row.method, f"{row.reward:.3f}", _ci(row.interval),
                      delta + (" *" if row.significant else ""), f"{row.max_kl:.2f}", shape])
    return headers, cells


MATCHED_NOTE = (
    "<p>Each method's reward read off its own reward–KL frontier at the KL budget (the start model is every "
    "method's point at KL 0; linear interpolation between measured points, never extrapolation: a method "
    "whose largest KL is below the budget <i>never reaches it</i>). Intervals: percentile bootstrap over "
    "prompts (the same draw for every method) and each method's seeds. * : the interval of the difference "
    "from the best method excludes 0.</p>"
)


# ---------------------------------------------------------------- plots


def setting_summary(rows: Sequence, reward: str, x_key: str) -> dict[str, list[dict[str, Any]]]:
    """Per method, per setting: mean ± s.e. of ``x_key`` and of the reward.

    For ``kl`` the per-prompt values give the s.e. (over prompts of the seed means); for a per-run
    number (perplexity, msttr_100, distinct_2) the s.e. is over seeds (0 with one seed).
    """
    groups, _ = method_groups(rows, reward)
    out: dict[str, list[dict[str, Any]]] = {}
    for group, runs in groups.items():
        for setting, rewards in runs.reward.items():
            y, y_se = mean_and_se(rewards)
            if x_key == "kl":
                x, x_se = mean_and_se(runs.kl[setting])
            else:
                values = [_run_number(r.result, x_key) for r in rows
                          if r.group == group and r.setting == setting and r.result]
                values = [v for v in values if v is not None]
                if not values:
                    continue
                x = float(np.mean(values))
                x_se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
            out.setdefault(group, []).append({"x": x, "x_se": x_se, "y": y, "y_se": y_se, "setting": setting})
    return out


def _run_number(result: dict, key: str) -> float | None:
    """A per-run number of an eval result: ``perplexity`` sits in its own section, the others at the top."""
    value = (result.get("perplexity") or {}).get("perplexity") if key == "perplexity" else result.get(key)
    return value if isinstance(value, (int, float)) else None


def plot_frontiers(
    rows: Sequence, rewards: Sequence[str], x_key: str, x_label: str, path: Path,
    lower_x_better: bool = True, colors: dict | None = None,
) -> Path | None:
    """Per reward (a panel): each method's settings (reward ± s.e. against ``x_key`` ± s.e.) and its frontier.

    Returns None (no file) when no method has ``x_key``: no empty panels.
    """
    from alignkit.eval.report import _pyplot, _save

    panels = [(name, setting_summary(rows, name, x_key)) for name in rewards]
    panels = [(name, data) for name, data in panels if data]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    start = next((r for r in rows if r.group == "start" and r.result), None)
    for ax, (name, data) in zip(axes[0], panels):
        sign = 1.0 if lower_x_better else -1.0
        labels: list[tuple[float, float, str, Any]] = []
        for group, pts in data.items():
            color = (colors or {}).get(group)
            ax.errorbar([p["x"] for p in pts], [p["y"] for p in pts], xerr=[p["x_se"] for p in pts],
                        yerr=[p["y_se"] for p in pts], fmt="o", capsize=2, color=color, label=group, alpha=0.85)
            anchor = [(0.0, _start_reward(start, name))] if x_key == "kl" and start else []
            y_sign = -1.0 if lower_is_better(name) else 1.0  # the frontier of an error rate runs along its lows
            front = frontier([(sign * p["x"], y_sign * p["y"]) for p in pts] + [(x, y_sign * y) for x, y in anchor])
            ax.plot([sign * x for x, _ in front], [y_sign * y for _, y in front], "-", color=color, linewidth=1.2)
            if len(pts) > 1:  # the knob value next to each point (placed once the panel is drawn)
                labels += [(p["x"], p["y"], p["setting"].split("=")[-1], color) for p in pts]
        if start and x_key == "kl":
            ax.plot([0.0], [_start_reward(start, name)], "k*", markersize=10, label="start")
        annotate_apart(ax, labels, fontsize=7)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"reward ({name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.7)
    return _save(fig, path)


# candidate text offsets (points) from a marker, in order of preference: right-above, right-below, ...
LABEL_OFFSETS = ((4, 5), (4, -12), (-4, 5), (-4, -12), (4, 15), (4, -22), (-4, 15), (-4, -22), (10, -3), (-10, -3))


def label_offsets(anchors: Sequence[tuple[float, float]], widths: Sequence[float], height: float) -> list[tuple[int, int]]:
    """Greedy placement of point labels so that their boxes do not overlap each other or the markers.

    ``anchors``: the points, in points (1/72 inch) on the page; ``widths``: each label's width and
    ``height`` the text height, in points. Each label takes the first offset of ``LABEL_OFFSETS``
    (a negative x offset puts the text's right edge there) whose box overlaps no box placed before
    and no marker (a 7-point square, a default marker); when every offset collides, the one with the least overlap.
    Returns the offsets, in points, in the order of ``anchors``.
    """
    def box(i: int, off: tuple[int, int]) -> tuple[float, float, float, float]:
        x, y = anchors[i][0] + off[0], anchors[i][1] + off[1]
        left = x if off[0] >= 0 else x - widths[i]
        return left, y, left + widths[i], y + height

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    markers = [(x - 3.5, y - 3.5, x + 3.5, y + 3.5) for x, y in anchors]
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for i in range(len(anchors)):
        costs = [sum(overlap(box(i, off), b) for b in placed + markers) for off in LABEL_OFFSETS]
        best = LABEL_OFFSETS[int(np.argmin(costs))]
        placed.append(box(i, best))
        out.append(best)
    return out


def annotate_apart(ax, labels: Sequence[tuple[float, float, str, Any]], fontsize: float = 7) -> None:
    """Write ``(x, y, text, color)`` labels next to their points, placed by :func:`label_offsets`."""
    if not labels:
        return
    ax.autoscale_view()
    ax.figure.tight_layout()  # place in the final layout: _save's tight_layout would move the points after
    to_points = 72.0 / ax.figure.dpi
    anchors = [tuple(v * to_points for v in ax.transData.transform((x, y))) for x, y, _, _ in labels]
    widths = [0.6 * fontsize * len(text) for _, _, text, _ in labels]  # ~0.6 em per character
    for (x, y, text, color), off in zip(labels, label_offsets(anchors, widths, fontsize)):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=off, fontsize=fontsize, color=color,
                    ha="left" if off[0] >= 0 else "right")


def _start_reward(start, name: str) -> float:
    return float((start.result.get("rewards", {}).get(name) or {}).get("mean", float("nan")))
