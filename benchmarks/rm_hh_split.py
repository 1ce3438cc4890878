"""The HH-RLHF harmless reward-model anchor of issue 17: TRL's split, alignkit's trainer.

Split (the one TRL's ``RewardTrainer`` was measured on, 0.570 held-out accuracy): the usable
pairs of ``../shared/data/hh-rlhf-harmless/test.jsonl.gz`` in file order (usable: the chosen and
rejected dialogues share their prompt; 2,307 of 2,312), the first 1,800 for training and the
last 512 for testing; MiniLM, one epoch, lr 2e-5, max length 256 (configs/reward_model_hh.yaml
otherwise). Writes the two files under OUT and trains there; prints the held-out accuracy.

    python benchmarks/rm_hh_split.py [OUT]   # default runs/rm_hh_split
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "../shared/data/hh-rlhf-harmless/test.jsonl.gz"
MARK = "\n\nAssistant:"


def usable_lines(path: Path) -> list[str]:
    """Lines whose chosen and rejected dialogues share everything up to the last Assistant turn."""
    out = []
    for line in gzip.open(path, "rt").read().splitlines():
        row = json.loads(line)
        chosen, rejected = row["chosen"], row["rejected"]
        if chosen[: chosen.rfind(MARK)] == rejected[: rejected.rfind(MARK)]:
            out.append(line)
    return out


def main(out: Path) -> float:
    from alignkit.cli import main as cli

    lines = usable_lines(DATA)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("\n".join(lines[:1800]) + "\n")
    (out / "test.jsonl").write_text("\n".join(lines[-512:]) + "\n")
    print(f"usable pairs {len(lines)}: train first 1800, test last 512")
    rc = cli(["train", "configs/reward_model_hh.yaml", f"data.train={out / 'train.jsonl'}",
              f"data.eval={out / 'test.jsonl'}", "data.eval_size=0", "train.learning_rate=2e-5",
              "train.num_epochs=1", "train.eval_every=1000", f"train.output_dir={out / 'run'}",
              "train.progress=false"])
    records = [json.loads(x) for x in (out / "run/metrics.jsonl").read_text().splitlines() if x.strip()]
    acc = next(r["eval/accuracy"] for r in reversed(records) if "eval/accuracy" in r)
    print(json.dumps({"rc": rc, "eval/accuracy": acc, "last": records[-1]}))
    return acc


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/rm_hh_split"))
