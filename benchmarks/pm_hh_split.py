"""The pairwise preference model on the HH-RLHF harmless reward-model anchor split, beside the
Bradley-Terry reward model (issue 21).

Same split and settings as ``benchmarks/rm_hh_split.py`` (the usable pairs of
``hh-rlhf-harmless/test.jsonl.gz`` in file order, the first 1,800 to train, the last 512 to test;
MiniLM, one epoch, lr 2e-5, max length 256, batch 16): trains ``method: preference_model``
(``configs/preference_model_hh.yaml``) and, unless ``--pm-only``, the Bradley-Terry reward model
(``configs/reward_model_hh.yaml``), and prints both held-out accuracies.

    python benchmarks/pm_hh_split.py [OUT] [--pm-only]   # default runs/pm_hh_split
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rm_hh_split import DATA, usable_lines  # noqa: E402


def _train(config: str, out: Path, name: str) -> dict:
    from alignkit.cli import main as cli

    t0, c0 = time.perf_counter(), time.process_time()
    rc = cli(["train", config, f"data.train={out / 'train.jsonl'}", f"data.eval={out / 'test.jsonl'}",
              "data.eval_size=0", "train.learning_rate=2e-5", "train.num_epochs=1", "train.eval_every=1000",
              f"train.output_dir={out / name}", "train.progress=false", "reward_model.max_length=256"])
    records = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    final = next(r for r in reversed(records) if "eval/accuracy" in r)
    return {"rc": rc, "eval/accuracy": final["eval/accuracy"], "eval/pairs": final.get("eval/pairs"),
            "steps": final["step"], "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1)}


def main(out: Path, pm_only: bool = False) -> dict:
    lines = usable_lines(DATA)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("\n".join(lines[:1800]) + "\n")
    (out / "test.jsonl").write_text("\n".join(lines[-512:]) + "\n")
    print(f"usable pairs {len(lines)}: train first 1800, test last 512", flush=True)
    result = {"preference_model": _train("configs/preference_model_hh.yaml", out, "pm")}
    print(json.dumps(result), flush=True)
    if not pm_only:
        result["reward_model_bradley_terry"] = _train("configs/reward_model_hh.yaml", out, "rm")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(args[0] if args else "runs/pm_hh_split"), pm_only="--pm-only" in sys.argv)
