"""Tables (markdown, CSV), plots (PNG, matplotlib's Agg backend) and a self-contained HTML page.

The table is shaped like RAFT's Table 3 (Dong et al. 2023): one row per model, with the
reward(s) ± standard error, perplexity, MSTTR-100, distinct-1/2, unique-1/2 and length,
plus KL to the starting model, win rate and preference accuracy. A row is built from an
``eval.json`` (:func:`summary_row`), so ``compare`` and ``soup`` share this module.
Plots are written to PNG files; the HTML page embeds them as base64 ``data:`` URIs, so
the page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- rows


@dataclass
class ReportRow:
    """One model (or dataset) of a comparison."""

    label: str
    result: dict | None  # its eval.json (None when it failed)
    status: str = "ok"  # "ok", "ok (cached)", or "failed: <the error's first line>"
    samples: list[dict] = field(default_factory=list)  # its samples.jsonl rows: prompt, responses, rewards
    curve: list[dict] = field(default_factory=list)  # its metrics.jsonl records (trained models)
    group: str = ""  # the method (compare entry) whose frontier this run belongs to; "start"; "" for none
    setting: str = ""  # its knob setting ("beta=0.1"; empty without a sweep)
    seed: int | None = None


def summary_row(label: str, result: dict | None, status: str = "ok") -> dict[str, Any]:
    """A flat row (CSV columns) from an eval result; ``None`` values are missing metrics."""
    row: dict[str, Any] = {"method": label, "status": status}
    if not result:
        return row
    for name, stats in result.get("rewards", {}).items():
        row[f"reward/{name}"] = stats.get("mean")
        row[f"reward/{name}_se"] = stats.get("stderr")
    row["perplexity"] = (result.get("perplexity") or {}).get("perplexity")
    for key in ("msttr_100", "distinct_1", "distinct_2", "unique_1", "unique_2", "length"):
        row[key] = result.get(key)
    kl = result.get("kl") or {}
    row["kl"], row["kl_se"] = kl.get("mean"), kl.get("stderr")
    win = result.get("win_rate") or {}
    row["win_rate"] = win.get("win_rate")
    for key in ("win", "tie", "loss"):
        row[key] = win.get(key)
    row["pref_acc"] = (result.get("preference_accuracy") or {}).get("policy")
    bok = result.get("best_of_k")
    if bok:
        for name, curve in bok["rewards"].items():
            row[f"best_of_{bok['k'][-1]}/{name}"] = curve["mean"][-1]
    return row


def reward_names(rows: Sequence[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for key in row:
            if key.startswith("reward/") and not key.endswith("_se") and key[7:] not in names:
                names.append(key[7:])
    return names


def _f(x: Any, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def _pm(mean: Any, se: Any) -> str:
    if mean is None:
        return "—"
    return _f(mean) + (f" ± {_f(se)}" if se is not None else "")


def table_cells(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the RAFT-style table (a column only when some row has it)."""
    names = reward_names(rows)
    columns: list[tuple[str, Any]] = [("Method", lambda r: r["method"])]
    columns += [
        (f"Reward ({n})", lambda r, n=n: _pm(r.get(f"reward/{n}"), r.get(f"reward/{n}_se"))) for n in names
    ]
    columns += [
        ("PPL", lambda r: _f(r.get("perplexity"), ".2f")),
        ("MSTTR-100", lambda r: _f(r.get("msttr_100"))),
        ("Distinct-1", lambda r: _f(r.get("distinct_1"))),
        ("Distinct-2", lambda r: _f(r.get("distinct_2"))),
        ("Unique-1", lambda r: _f(r.get("unique_1"), "d")),
        ("Unique-2", lambda r: _f(r.get("unique_2"), "d")),
        ("Length", lambda r: _f(r.get("length"), ".1f")),
        ("KL", lambda r: _pm(r.get("kl"), r.get("kl_se"))),
        (
            "Win rate (W/T/L)",
            lambda r: (
                "—"
                if r.get("win_rate") is None
                else f"{r['win_rate']:.3f} ({r['win']}/{r['tie']}/{r['loss']})"
            ),
        ),
        ("Pref. acc.", lambda r: _f(r.get("pref_acc"))),
    ]
    optional = {"PPL": "perplexity", "KL": "kl", "Win rate (W/T/L)": "win_rate", "Pref. acc.": "pref_acc"}
    columns = [
        (h, fn) for h, fn in columns if h not in optional or any(r.get(optional[h]) is not None for r in rows)
    ]
    columns.append(("Status", lambda r: r["status"]))
    return [h for h, _ in columns], [[fn(r) for _, fn in columns] for r in rows]


def markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    def line(values):
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(c) for c in cells)]) + "\n"


def html_table(headers: Sequence[str], cells: Sequence[Sequence[str]], css_class: str = "results") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in cells
    )
    return f'<table class="{css_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>'


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Rows as CSV; the columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors_for(labels: Sequence[str]) -> dict[str, Any]:
    """One colour per label, the same in every plot of a report."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# a panel of the learning curves, and the metrics.jsonl keys that feed it (trainers name them differently)
# (on-policy RL logs its KL to the reference as TRL's PPOTrainer, ``objective/kl``; its ``kl``, where a
# GRPO-style loss logs one, is the loss's per-token k3, so ``objective/kl`` comes first)
CURVE_KEYS = {"loss": ("loss", "train/loss"), "reward": ("reward", "reward/mean"), "kl": ("objective/kl", "kl")}


def curve_points(records: Sequence[dict], aliases: Sequence[str]) -> list[tuple[float, float]]:
    """(x, value) of the first alias each record has; x is ``step``, or ``stage + 1`` for staged trainers."""
    pts = []
    for rec in records:
        x = rec.get("step", rec["stage"] + 1 if isinstance(rec.get("stage"), int) else None)
        value = next((rec[k] for k in aliases if isinstance(rec.get(k), (int, float))), None)
        if x is not None and value is not None:
            pts.append((x, value))
    return pts


def plot_learning_curves(curves: dict[str, list[dict]], path: Path, colors: dict | None = None) -> Path:
    """Training metrics against the step (the stage for staged trainers such as RAFT), one panel per metric."""
    plt = _pyplot()
    present = [
        k for k, aliases in CURVE_KEYS.items() if any(curve_points(recs, aliases) for recs in curves.values())
    ] or ["loss"]
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4.2), squeeze=False)
    for ax, key in zip(axes[0], present):
        for label, records in curves.items():
            pts = curve_points(records, CURVE_KEYS[key])
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker=".",
                    label=label,
                    color=(colors or {}).get(label),
                )
        ax.set_xlabel("optimizer step (staged runs: the step each stage starts at)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_best_of_k(results: dict[str, dict], path: Path, colors: dict | None = None) -> Path:
    """Mean reward of best-of-k against k (log2 axis), one line per model, one panel per reward."""
    plt = _pyplot()
    curves = {label: r["best_of_k"] for label, r in results.items() if r and r.get("best_of_k")}
    names = list(next(iter(curves.values()))["rewards"]) if curves else ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, bok in curves.items():
            curve = bok["rewards"].get(name)
            if curve:
                se = [s or 0.0 for s in curve["stderr"]]
                ax.errorbar(
                    bok["k"],
                    curve["mean"],
                    yerr=se,
                    marker="o",
                    capsize=3,
                    label=label,
                    color=(colors or {}).get(label),
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples per prompt)")
        ax.set_ylabel(f"best-of-k reward ({name})")
        ax.grid(alpha=0.3)
        if curves:  # inside the axes: a legend outside squeezed the plot to a sliver
            ax.legend(fontsize=7, loc="lower right", framealpha=0.7)
        else:
            ax.text(0.5, 0.5, "best_of_k is off", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_pareto(
    points: Sequence[Sequence[float]],
    labels: Sequence[str],
    front: Sequence[int],
    axis_names: Sequence[str],
    path: Path,
    chosen: int | None = None,
) -> Path:
    """Reward 1 against reward 2, each point labelled, the Pareto front highlighted and joined."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.scatter(xs, ys, color="lightsteelblue", edgecolor="navy", zorder=2, label="soups")
    on_front = sorted(front, key=lambda i: xs[i])
    ax.plot(
        [xs[i] for i in on_front],
        [ys[i] for i in on_front],
        "-o",
        color="crimson",
        zorder=3,
        label="Pareto front",
    )
    if chosen is not None:
        ax.scatter(
            [xs[chosen]],
            [ys[chosen]],
            s=220,
            facecolors="none",
            edgecolors="green",
            linewidths=2,
            zorder=4,
            label="best for preference",
        )
    from alignkit.eval.frontier_report import annotate_apart

    annotate_apart(ax, [(x, y, label, None) for x, y, label in zip(xs, ys, labels)], fontsize=8)
    ax.set_xlabel(f"reward ({axis_names[0]})")
    ax.set_ylabel(f"reward ({axis_names[1]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f8; }
table.results td { white-space: nowrap; }
table.samples td { min-width: 160px; max-width: 320px; white-space: pre-wrap; word-wrap: break-word; }
td .score { color: #666; font-size: 11px; display: block; margin-top: 4px; }
figure { display: inline-block; margin: 8px; }
figure img { max-width: 100%; border: 1px solid #ddd; }
.failed { color: #a00; }
.scroll { overflow-x: auto; }
"""


def image_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def samples_table(prompts: Sequence[str], columns: dict[str, list[dict]], n: int) -> str:
    """Side by side: one row per prompt, one column per model; each cell a response and its rewards.

    ``columns`` maps a label to rows ``{"response": str, "rewards": {name: value}}`` aligned with ``prompts``.
    """
    labels = list(columns)
    head = "<th>Prompt</th>" + "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = []
    for i, prompt in enumerate(prompts[:n]):
        cells = [f"<td>{html.escape(prompt)}</td>"]
        for label in labels:
            rows = columns[label]
            if i >= len(rows) or rows[i] is None:
                cells.append("<td>—</td>")
                continue
            scores = ", ".join(f"{k} {_f(v)}" for k, v in rows[i].get("rewards", {}).items())
            cells.append(
                f'<td>{html.escape(rows[i]["response"])}<span class="score">{html.escape(scores)}</span></td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="samples">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody>\n</table>"
    )


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A complete page: ``sections`` are (heading, inner HTML) pairs, nothing loaded from outside."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------- the compare report


def _first_samples(samples: list[dict]) -> list[dict]:
    return [
        {
            "response": (s.get("responses") or [""])[0].strip(),  # tokenizers decode a leading space
            "rewards": {k: (v[0] if v else None) for k, v in s.get("rewards", {}).items()},
        }
        for s in samples
    ]


def write_compare_report(
    out_dir: str | Path,
    rows: Sequence[ReportRow],
    samples_shown: int = 8,
    title: str = "alignkit compare",
    start_model: str = "",
    kl_budget: float | None = None,
    bootstrap: int = 1000,
) -> Path:
    """``matched_kl.md`` (the headline), ``table.md``, ``table.csv``, the plots and ``report.html``."""
    from alignkit.eval.frontier_report import MATCHED_NOTE, matched_cells, matched_tables, method_groups
    from alignkit.eval.frontier_report import plot_frontiers as frontiers
    from alignkit.rewards.base import lower_is_better

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = [summary_row(r.label, r.result, r.status) for r in rows]
    headers, cells = table_cells(flat)
    (out / "table.md").write_text(markdown_table(headers, cells))
    write_csv(out / "table.csv", flat)
    names = reward_names(flat)
    matched = matched_tables(rows, names, kl_budget, bootstrap)
    matched_md, matched_html = [], []
    for name, table in matched.items():
        m_headers, m_cells = matched_cells(table, method_groups(rows, name)[0])
        heading = f"Reward ({name}) at matched KL {table.budget:.2f}" + (" (lower is better)" if lower_is_better(name) else "")
        matched_md.append(f"{heading}\n\n" + markdown_table(m_headers, m_cells))
        matched_html.append(f"<h3>{html.escape(heading)}</h3>" + html_table(m_headers, m_cells, "results matched"))
    (out / "matched_kl.md").write_text("\n".join(matched_md) or "no method has KL measurements\n")
    by_method = colors_for(list(dict.fromkeys(r.group or r.label for r in rows)))  # runs of a method share one
    colors = {**by_method, **{r.label: by_method[r.group or r.label] for r in rows}}
    plots = {
        "Reward against KL(pi || pi_start): each method's settings and frontier": frontiers(
            rows, names, "kl", "KL to the starting model (nats)", out / "reward_vs_kl.png", colors=colors),
        "Reward against perplexity of the reference responses": frontiers(
            rows, names, "perplexity", "perplexity", out / "reward_vs_perplexity.png", colors=colors),
        "Reward against diversity (MSTTR-100)": frontiers(
            rows, names, "msttr_100", "MSTTR-100 (higher: more diverse)", out / "reward_vs_msttr.png",
            lower_x_better=False, colors=colors),
        "Reward against diversity (distinct-2)": frontiers(
            rows, names, "distinct_2", "distinct-2 (higher: more diverse)", out / "reward_vs_distinct2.png",
            lower_x_better=False, colors=colors),
        "Learning curves (metrics.jsonl)": plot_learning_curves(
            {r.label: r.curve for r in rows if r.curve}, out / "learning_curves.png", colors=colors
        ) if any(r.curve for r in rows) else None,
        "Best-of-k: mean reward of the best of k samples": plot_best_of_k(
            {r.label: r.result for r in rows}, out / "best_of_k.png", colors=colors
        ) if any(r.result and r.result.get("best_of_k") for r in rows) else None,
    }
    prompts = next(([s["prompt"] for s in r.samples] for r in rows if r.samples), [])
    columns = {r.label: _first_samples(r.samples) for r in rows if r.samples}
    failed = [r for r in rows if r.status.startswith("failed")]
    sections = []
    if matched_html:
        sections.append(("Matched KL: reward at the same distance from the start model",
                         '<div class="scroll">' + "".join(matched_html) + "</div>" + MATCHED_NOTE))
    start_note = f"<p>start: the starting model, {html.escape(start_model)}.</p>" if start_model else ""
    sections.append(("Every run", f'<div class="scroll">{html_table(headers, cells)}</div>' + NOTES + start_note))
    if failed:
        items = "".join(f"<li><b>{html.escape(r.label)}</b>: {html.escape(r.status)}</li>" for r in failed)
        sections.append(("Failed runs", f'<ul class="failed">{items}</ul>'))
    figures = "".join(
        f"<figure>{image_tag(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, path in plots.items() if path is not None
    )
    sections.append(("Plots", figures))
    sections.append(
        (
            "Samples (the first sample of each model, side by side)",
            f'<div class="scroll">{samples_table(prompts, columns, samples_shown)}</div>',
        )
    )
    (out / "report.html").write_text(html_page(title, sections))
    return out


NOTES = (
    "<p>Reward: mean over samples ± standard error over prompts. PPL: perplexity of the reference responses. "
    "MSTTR-100, Distinct-n, Unique-n: diversity of all samples (as RAFT, Table 3). Length: mean words per "
    "response. KL: sum over tokens of log pi - log pi_start on the model's own samples, mean ± s.e. "
    "Win rate: (wins + ties / 2) / comparisons against the baseline. Pref. acc.: preference accuracy on "
    "held-out pairs of the policy's implicit reward.</p>"
)
