"""Nash-MD and XPO over several seeds: does the trained policy beat the starting one under the run's judge? (issue 21)

Two settings:

- the tiny task (default): ``configs/nash_md_tiny.yaml`` and ``configs/xpo_tiny.yaml`` (the random tiny model,
  a reward as judge; extra overrides after ``--``), judged on the training prompts;
- ``--task DIR --judge PM``: ``configs/nash_md_reviews.yaml`` and ``configs/xpo_reviews.yaml`` on the review
  task of :mod:`alignkit.demo.judge_task` (``DIR``: its base model and prompts) with the preference model
  ``PM`` (``configs/preference_model_reviews.yaml``) as judge, judged on the task's held-out prompts.

Each run uses ``train.seed = sampling.seed = s``. Per run it prints the mean VADER of the POLICY's own samples at
each stage (stage 0 samples the starting policy; the other source's samples are left out), with a reward judge
also the policy's reward by stage, from ``stages/stage-n/samples.jsonl``; then :func:`final_against_initial`:
the starting and the trained policy sampled on the same prompts with the same sampling seed and compared pair by
pair by the run's judge.

    python benchmarks/nash_xpo_seeds.py OUT [--seeds 0,1,2] [--stages 6] [--methods nash_md,xpo] [--task DIR --judge PM]
        [-- key=value ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def stage_rows(samples: Path) -> list[dict]:
    return [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]


def policy_reward(samples: Path) -> float:
    """Mean judge score of the policy's samples (a reward judge: its reward)."""
    rows = stage_rows(samples)
    return statistics.mean(s for r in rows for s, src in zip(r["scores"], r["sources"]) if src == "policy")


def policy_vader(samples: Path) -> float:
    """Mean VADER compound of the policy's samples (the function behind the review judge's labels)."""
    from alignkit.rewards.vader import VaderReward

    pairs = [(r["prompt"], y) for r in stage_rows(samples) for y, src in zip(r["responses"], r["sources"])
             if src == "policy"]
    return float(VaderReward().score([p for p, _ in pairs], [y for _, y in pairs]).mean())


def final_against_initial(run: Path, samples_per_prompt: int = 4, prompts: str = "") -> dict:
    """The starting and the trained policy on the SAME prompts (``prompts``, a file; empty: every prompt of the
    run's data.train) with the same sampling seed, the i-th sample of one paired with the i-th of the other.
    P(trained > starting) is the mean over the pairs of the run's judge's P(y_trained > y_start): a preference
    model's own ``compare``, a reward's sigmoid(r(y_trained) - r(y_start)) (the game's value that Nash-MD
    ascends). Also the mean VADER of each policy's samples and, with a reward judge, its mean reward."""
    from dataclasses import replace

    from alignkit.config import load_config
    from alignkit.engine.generation import sample
    from alignkit.rewards import as_text, build_reward
    from alignkit.rewards.preference import PreferenceJudge, win_probability
    from alignkit.rewards.vader import VaderReward
    from alignkit.train.sampling import load_model, load_prompts

    cfg = load_config(run / "config.yaml")
    judge = build_reward(cfg.rewards)
    initial, tok = load_model(cfg)
    final, _ = load_model(cfg, str(run / "final"))
    rows = load_prompts(replace(cfg, data=replace(cfg.data, train=prompts)) if prompts else cfg, tok)
    sampling = replace(cfg.sampling, num_samples=samples_per_prompt, seed=2_024)
    texts, prompt_texts = [], []
    for model in (initial, final):
        out = sample(model, tok, [r.prompt_ids for r in rows], sampling)
        prompt_texts = [as_text(r.prompt) for r, ts in zip(rows, out.texts) for _ in ts]
        texts.append([t for ts in out.texts for t in ts])
    p = win_probability(judge, prompt_texts, texts[1], texts[0])
    vader = [VaderReward().score(prompt_texts, t).float() for t in texts]
    result = {"p_final_beats_initial": round(float(p.mean()), 4),
              "p_final_beats_initial_se": round(float(p.std() / len(p) ** 0.5), 4),
              "vader_initial": round(float(vader[0].mean()), 4), "vader_final": round(float(vader[1].mean()), 4),
              "eval_samples": len(p), "eval_prompts": prompts or cfg.data.train}
    if not isinstance(judge, PreferenceJudge):
        scores = [judge.score(prompt_texts, t).float() for t in texts]
        result.update(initial_reward=round(float(scores[0].mean()), 4), final_reward=round(float(scores[1].mean()), 4))
    return result


def run_overrides(task: str, judge: str) -> list[str]:
    """The review task's paths on the command line (the configs name ``runs/reviews_judge`` and ``runs/pm_reviews``)."""
    if not task:
        return []
    return [f"model.name_or_path={Path(task) / 'base'}", f"data.train={Path(task) / 'prompts.jsonl'}",
            f"rewards=[{{kind: preference_model, path: {judge}}}]"]


def main(out: Path, seeds: list[int], stages: int, overrides: list[str], task: str = "", judge: str = "",
         methods: tuple[str, ...] = ("nash_md", "xpo")) -> dict:
    from alignkit.cli import main as cli

    suffix = "reviews" if task else "tiny"
    held_out = str(Path(task) / "eval_prompts.jsonl") if task else ""
    result: dict = {}
    for method in methods:
        for seed in seeds:
            run = out / f"{method}-seed{seed}"
            rc = cli(["train", f"configs/{method}_{suffix}.yaml", f"train.output_dir={run}", f"train.seed={seed}",
                      f"sampling.seed={seed}", f"online.stages={stages}", "train.progress=false",
                      *run_overrides(task, judge), *overrides])
            samples = [run / "stages" / f"stage-{n}" / "samples.jsonl" for n in range(stages)]
            curves = {"policy_vader_by_stage": [round(policy_vader(s), 4) for s in samples]}
            if not task:
                curves["policy_reward_by_stage"] = [round(policy_reward(s), 4) for s in samples]
            result[f"{method}/seed{seed}"] = {"rc": rc, **curves, **final_against_initial(run, prompts=held_out)}
            print(json.dumps({f"{method}/seed{seed}": result[f"{method}/seed{seed}"]}), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def flag(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    seeds = [int(s) for s in flag(argv, "--seeds", "0,1,2").split(",")]
    task, judge = flag(argv, "--task", ""), flag(argv, "--judge", "runs/pm_reviews/final")
    out = Path(argv[0] if argv and not argv[0].startswith("--") else "runs/nash_xpo_seeds")
    out.mkdir(parents=True, exist_ok=True)
    methods = tuple(flag(argv, "--methods", "nash_md,xpo").split(","))
    main(out, seeds, int(flag(argv, "--stages", "6")), extra, task, judge, methods)
