"""Nash-MD and XPO on the tiny task over several seeds: does the policy's reward rise? (issue 21)

Runs ``configs/nash_md_tiny.yaml`` and ``configs/xpo_tiny.yaml`` (extra overrides after ``--``) with
``train.seed = sampling.seed = s`` for each seed, and prints per run the mean reward of the POLICY's own
samples at each stage (stage 0 samples the starting policy; the other source's samples are left out),
from ``stages/stage-n/samples.jsonl``, and the last stage minus the first; then the starting and the
trained policy sampled on the same prompts with the same seed (:func:`final_against_initial`).

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


def final_against_initial(run: Path, samples_per_prompt: int = 4) -> dict:
    """The starting and the trained policy on the SAME prompts (every prompt of data.train) with the same
    sampling seed: mean reward of each, and P(trained > starting) = mean sigmoid(r(final) - r(initial))
    over the paired samples (the game's value that Nash-MD ascends, judged by the run's reward)."""
    from dataclasses import replace

    import torch

    from alignkit.config import load_config
    from alignkit.engine.generation import sample
    from alignkit.rewards import as_text, build_reward
    from alignkit.train.sampling import load_model, load_prompts

    cfg = load_config(run / "config.yaml")
    reward = build_reward(cfg.rewards)
    initial, tok = load_model(cfg)
    final, _ = load_model(cfg, str(run / "final"))
    rows = load_prompts(cfg, tok)
    sampling = replace(cfg.sampling, num_samples=samples_per_prompt, seed=2_024)
    scores = []
    for model in (initial, final):
        out = sample(model, tok, [r.prompt_ids for r in rows], sampling)
        prompts = [as_text(r.prompt) for r, ts in zip(rows, out.texts) for _ in ts]
        scores.append(reward.score(prompts, [t for ts in out.texts for t in ts]).float())
    return {"initial_reward": round(float(scores[0].mean()), 4), "final_reward": round(float(scores[1].mean()), 4),
            "p_final_beats_initial": round(float(torch.sigmoid(scores[1] - scores[0]).mean()), 4),
            "eval_samples": len(scores[0])}


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
                                              "last_minus_first": round(curve[-1] - curve[0], 4),
                                              **final_against_initial(run)}
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
