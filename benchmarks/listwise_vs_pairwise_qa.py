"""Listwise against pairwise on qa-feedback (K = 4), issue 17: does training on the whole ranking beat
training on its best and worst pair, at the same number of training sequences?

Split: the rows of ``../shared/data/qa-feedback/dev_feedback.json`` whose four responses are not all tied
(488 of 500), in file order: the last 100 held out, the rest for training. Listwise DPO trains on the
K = 4 rankings, 4 prompts per step (16 sequences); DPO on each ranking's best and worst response
(ties at either end broken by position), 8 prompts per step (16 sequences); both for the same steps
from the same start, otherwise as ``configs/listwise_qa_feedback.yaml`` (tiny-llama, beta 0.1).
Measured on the held-out rankings: pairwise accuracy and Kendall tau-b of the implicit reward
``log pi(y|x) - log pi_ref(y|x)`` (pi_ref: the start model), per seed.

    python benchmarks/listwise_vs_pairwise_qa.py [OUT] [--seeds N] [--first-seed F] [--steps S]   # default runs/listwise_vs_pairwise
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "../shared/data/qa-feedback/dev_feedback.json"
HELD_OUT = 100


def write_split(out: Path) -> dict[str, Path]:
    """train_ranked.jsonl, train_pairs.jsonl (best vs worst of each ranking) and test_ranked.jsonl."""
    from alignkit.eval.runner import load_rows

    rows = [ex for ex in load_rows(str(DATA)) if len(set(ex.scores)) > 1]
    train, test = rows[:-HELD_OUT], rows[-HELD_OUT:]

    def ranked(ex):
        return {"prompt": ex.prompt, "responses": ex.responses, "scores": ex.scores}

    def best_worst(ex):
        best = max(range(len(ex.scores)), key=lambda k: ex.scores[k])
        worst = min(range(len(ex.scores)), key=lambda k: ex.scores[k])
        return {"prompt": ex.prompt, "chosen": ex.responses[best], "rejected": ex.responses[worst]}

    out.mkdir(parents=True, exist_ok=True)
    files = {"ranked": out / "train_ranked.jsonl", "pairs": out / "train_pairs.jsonl", "test": out / "test_ranked.jsonl"}
    for path, items in ((files["ranked"], map(ranked, train)), (files["pairs"], map(best_worst, train)),
                        (files["test"], map(ranked, test))):
        path.write_text("".join(json.dumps(r) + "\n" for r in items))
    print(f"rows with a preference {len(rows)}: train {len(train)}, held out {len(test)}")
    return files


def held_out_ranking(final: Path, test: Path) -> dict:
    """Pairwise accuracy and Kendall tau-b of the implicit reward on the held-out rankings."""
    from alignkit.eval.runner import EvalConfig, load_model, preference_accuracy

    cfg = EvalConfig(preference_data=str(test), max_length=320, max_prompt_length=192, implicit_reward="ratio",
                     batch_size=4, progress=False)
    model, tokenizer = load_model(str(final), cfg)
    reference, _ = load_model("tiny-llama", cfg, tokenizer)
    return preference_accuracy(model, reference, tokenizer, cfg)


def main(out: Path, seeds: int, steps: int, first_seed: int = 0) -> list[dict]:
    from alignkit.cli import main as cli

    files = write_split(out)
    results = []
    for seed in range(first_seed, first_seed + seeds):
        for method, data, batch in (("listwise_dpo", files["ranked"], 4), ("dpo", files["pairs"], 8)):
            run = out / f"{method}-s{seed}"
            rc = cli(["train", "configs/listwise_qa_feedback.yaml", f"method={method}", f"data.train={data}",
                      "data.format=auto", "data.eval_size=0", f"train.batch_size={batch}", f"train.max_steps={steps}",
                      "train.eval_every=0", f"train.seed={seed}", f"train.output_dir={run}", "train.progress=false",
                      "train.overwrite=true"])
            acc = held_out_ranking(run / "final", files["test"])
            results.append({"method": method, "seed": seed, "rc": rc, "accuracy": acc["policy"],
                            "kendall_tau": acc["policy_kendall_tau"], "rows": acc["rows"]})
            print(json.dumps(results[-1]), flush=True)
    (out / f"results-s{first_seed}-{first_seed + seeds - 1}.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="runs/listwise_vs_pairwise")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    main(Path(args.out), args.seeds, args.steps, args.first_seed)
