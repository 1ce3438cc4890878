"""Fine-grained vs holistic PPO at matched KL: error rates (lower is better) read off each arm's frontier (issue 22).

Reads the runs of ``alignkit compare configs/compare_fine_grained_qa.yaml`` (its ``OUTPUT_DIR/runs/*``) and prints,
per run group (``fine_grained_ppo``, ``holistic_ppo``) and KL setting: the mean over seeds of KL, each judge's
error rate, the errors per answer (rate x segments), and the answers' segments (sub-sentences and sentences
per answer, words), each with its standard
error over prompts (seed-averaged per prompt); then, per error rate, the matched-KL table of
:func:`alignkit.eval.frontier.matched_kl` with ``lower_is_better`` (the frontier keeps the lowest error rate at
no larger KL; the start model is every arm's KL-0 point), with bootstrap intervals over
prompts and seeds. ``alignkit compare``'s own ``matched_kl.md`` now reads an ``error_rate`` lowest-first as well;
this script adds the errors per answer and the segment counts that show the policy gaming the segmentation.

    python benchmarks/fine_grained_matched_kl.py runs/compare_fine_grained_qa [--budget KL]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from alignkit.data.spans import sentences, sub_sentences
from alignkit.eval.frontier import MethodRuns, matched_kl, mean_and_se

RATES = ("relevance/error_rate", "factuality/error_rate")


def per_prompt(samples: list[dict], value) -> np.ndarray:
    """``[prompts]``: the mean of ``value(sample_index, row)`` over each prompt's samples."""
    return np.array([statistics.mean(value(i, row) for i in range(len(row["responses"]))) for row in samples])


def measures(run: Path) -> dict[str, np.ndarray] | None:
    path = run / "samples.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out = {name: per_prompt(rows, lambda i, r, n=name: r["rewards"][n][i]) for name in RATES}
    out["kl"] = per_prompt(rows, lambda i, r: r["kl"][i]) if rows and "kl" in rows[0] else np.zeros(len(rows))
    out["sub_sentences"] = per_prompt(rows, lambda i, r: len(sub_sentences(r["responses"][i])))
    out["sentences"] = per_prompt(rows, lambda i, r: len(sentences(r["responses"][i])))
    out["words"] = per_prompt(rows, lambda i, r: len(r["responses"][i].split()))
    # errors per answer (rate x segments): a policy that only adds segments judged correct lowers the rate, not these
    out["relevance_errors"] = per_prompt(
        rows, lambda i, r: r["rewards"][RATES[0]][i] * len(sub_sentences(r["responses"][i])))
    out["factuality_errors"] = per_prompt(
        rows, lambda i, r: r["rewards"][RATES[1]][i] * len(sentences(r["responses"][i])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--budget", type=float, default=None, help="KL budget (default: the largest every arm reaches)")
    args = parser.parse_args()
    runs = args.compare_dir / "runs"
    start = measures(runs / "start")
    groups: dict[str, dict[str, list[dict]]] = {}
    for run in sorted(runs.iterdir()):
        m = measures(run) if run.name != "start" else None
        if m is None or "-kl_coef" not in run.name:
            continue
        group, rest = run.name.split("-kl_coef", 1)
        setting = rest.split("-s", 1)[0]
        groups.setdefault(group, {}).setdefault(setting, []).append(m)
    keys = ("kl", *RATES, "relevance_errors", "factuality_errors", "sub_sentences", "sentences", "words")
    print("| run | seeds | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    if start is not None:
        print("| start | 1 | " + " | ".join("{:.3f} ± {:.3f}".format(*mean_and_se(start[k][None])) for k in keys) + " |")
    for group, settings in groups.items():
        for setting, seeds in settings.items():
            cells = ["{:.3f} ± {:.3f}".format(*mean_and_se(np.stack([s[k] for s in seeds]))) for k in keys]
            print(f"| {group} kl_coef {setting} | {len(seeds)} | " + " | ".join(cells) + " |")
    for rate in RATES:
        methods = {g: MethodRuns({s: np.stack([m[rate] for m in v]) for s, v in settings.items()},
                                 {s: np.stack([m["kl"] for m in v]) for s, v in settings.items()})
                   for g, settings in groups.items()}
        table = matched_kl(methods, start[rate] if start is not None else None, args.budget, lower_is_better=True)
        print(f"\n{rate} at matched KL {table.budget:.3f} (95% bootstrap intervals over prompts and seeds)")
        for row in table.rows:
            if row.reward is None:
                print(f"  {row.method}: never reaches it (largest KL {row.max_kl:.3f})")
                continue
            lo, hi = row.interval
            gap = "" if row.delta is None else (f"; its rate minus the best's: [{-row.delta[1]:.3f}, {-row.delta[0]:.3f}]"
                                               f"{' (significant)' if row.significant else ''}")
            print(f"  {row.method}: {row.reward:.3f} [{lo:.3f}, {hi:.3f}] (largest KL {row.max_kl:.3f}){gap}")


if __name__ == "__main__":
    main()
