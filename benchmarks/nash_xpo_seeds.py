"""Nash-MD and XPO on the tiny task over several seeds: does the policy's reward rise? (issue 21)

Runs ``configs/nash_md_tiny.yaml`` and ``configs/xpo_tiny.yaml`` (extra overrides after ``--``) with
``train.seed = sampling.seed = s`` for each seed, and prints per run the mean reward of the POLICY's own
samples at each stage (stage 0 samples the starting policy; the other source's samples are left out),
from ``stages/stage-n/samples.jsonl``, and the last stage minus the first.

    python benchmarks/nash_xpo_seeds.py OUT [--seeds 0,1,2] [--stages 6] [-- key=value ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def policy_reward(samples: Path) -> float:
    rows = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    return statistics.mean(s for r in rows for s, src in zip(r["scores"], r["sources"]) if src == "policy")


def main(out: Path, seeds: list[int], stages: int, overrides: list[str]) -> dict:
    from alignkit.cli import main as cli

    result: dict = {}
    for method in ("nash_md", "xpo"):
        for seed in seeds:
            run = out / f"{method}-seed{seed}"
            rc = cli(["train", f"configs/{method}_tiny.yaml", f"train.output_dir={run}", f"train.seed={seed}",
                      f"sampling.seed={seed}", f"online.stages={stages}", "train.progress=false", *overrides])
            curve = [policy_reward(run / "stages" / f"stage-{n}" / "samples.jsonl") for n in range(stages)]
            result[f"{method}/seed{seed}"] = {"rc": rc, "policy_reward_by_stage": [round(x, 4) for x in curve],
                                              "last_minus_first": round(curve[-1] - curve[0], 4)}
            print(json.dumps({f"{method}/seed{seed}": result[f"{method}/seed{seed}"]}), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    seeds = [int(s) for s in argv[argv.index("--seeds") + 1].split(",")] if "--seeds" in argv else [0, 1, 2]
    stages = int(argv[argv.index("--stages") + 1]) if "--stages" in argv else 6
    main(Path(argv[0] if argv and not argv[0].startswith("--") else "runs/nash_xpo_seeds"), seeds, stages, extra)
