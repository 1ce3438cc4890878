"""The harmless tier's headline table and ``summary.md`` (read from the compare report it ran).

The headline holds, per row of the comparison (the start model, the dataset's chosen and rejected
replies, every method): the judge's mean reward on the held-out prompts ± s.e. over prompts, the
win rate against the start model's replies (wins + ties / 2, judged by the same reward model), KL to
the start model on the row's own samples, the preference accuracy of the row's implicit reward on
held-out pairs, and the mean reply length in words. ``summary.md`` adds the matched-KL table and
replies to the same held-out prompts side by side.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from alignkit.eval.report import markdown_table

REWARD = "reward_model"
SHOWN = 4  # held-out prompts whose replies summary.md shows side by side (report.html shows them all)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def headline(out: Path) -> list[dict]:
    """The rows of ``report/table.csv`` with the headline's numbers (None where a row has none)."""
    with (out / "report" / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    keys = {"reward": f"reward/{REWARD}", "reward_se": f"reward/{REWARD}_se", "win_rate": "win_rate",
            "kl": "kl", "kl_se": "kl_se", "pref_acc": "pref_acc", "length": "length"}
    return [{"method": r["method"], "status": r["status"], **{k: _number(r.get(v, "")) for k, v in keys.items()},
             **{k: r.get(k, "") for k in ("win", "tie", "loss")}} for r in rows]


def _f(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def headline_table(rows: list[dict]) -> str:
    headers = ["Model", "Reward (held-out, RM) ± s.e.", "Win rate vs start (W/T/L)", "KL to start ± s.e.",
               "Pref. acc. (held-out pairs)", "Length (words)", "Status"]
    cells = []
    for r in rows:
        win = "—" if r["win_rate"] is None else f"{r['win_rate']:.3f} ({r['win']}/{r['tie']}/{r['loss']})"
        reward = "—" if r["reward"] is None else f"{r['reward']:+.3f} ± {_f(r['reward_se'])}"
        kl = "—" if r["kl"] is None else f"{r['kl']:.2f} ± {_f(r['kl_se'], '.2f')}"
        cells.append([r["method"], reward, win, kl, _f(r["pref_acc"]), _f(r["length"], ".1f"), r["status"]])
    return markdown_table(headers, cells)


def last_turn(prompt: str) -> str:
    """The last Human turn of an HH dialogue (the whole string otherwise), on one line."""
    turns = re.split(r"\n\nHuman:", prompt)
    text = turns[-1].rsplit("\n\nAssistant:", 1)[0] if len(turns) > 1 else prompt
    return " ".join(text.split())


def replies_side_by_side(out: Path, labels: list[str], shown: int = SHOWN) -> str:
    """Per held-out prompt, each model's first reply and its reward, as markdown."""
    from alignkit.eval.runner import read_samples

    samples = {label: read_samples(out / "runs" / label / "samples.jsonl") for label in labels}
    samples = {k: v for k, v in samples.items() if v}
    if not samples:
        return ""
    prompts = [s["prompt"] for s in next(iter(samples.values()))][:shown]
    parts = []
    for i, prompt in enumerate(prompts):
        cells = []
        for label, rows in samples.items():
            if i < len(rows):
                reply = " ".join((rows[i]["responses"] or [""])[0].split())
                score = (rows[i].get("rewards", {}).get(REWARD) or [None])[0]
                cells.append([label, reply, _f(score, "+.2f")])
        parts.append(f"**Prompt {i + 1}** (last human turn): {last_turn(prompt)}\n\n"
                     + markdown_table(["Model", "Reply (first sample)", "Reward"], cells))
    return "\n".join(parts)


def write_summary(out: Path, report: Path, rows: list[dict], accuracy: float,
                  timings: dict[str, float]) -> tuple[str, Path]:
    """``out/summary.md``; returns (the headline table, its path)."""
    table = headline_table(rows)
    labels = ["start"] + [r["method"] for r in rows if r["method"] != "start" and not r["method"].startswith("dataset")]
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    text = (
        "# alignkit demo: SmolLM2 harmlessness tier\n\n"
        f"Judge: a MiniLM reward model trained on pairs disjoint from the policy's and the held-out ones; "
        f"held-out pairwise accuracy {accuracy:.3f}. Time: {stages}.\n\n"
        + table + "\n" + (report / "matched_kl.md").read_text() + "\n## Replies to the same held-out prompts\n\n"
        + replies_side_by_side(out, labels)
    )
    path = out / "summary.md"
    path.write_text(text)
    return table, path
