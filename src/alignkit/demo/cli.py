"""``alignkit demo``: the first command to run; see :mod:`alignkit.demo.pipeline`."""

from __future__ import annotations

import argparse
import time

from alignkit.cli import command
from alignkit.demo.pipeline import DEFAULT_METHODS, DemoConfig
from alignkit.errors import ConfigError

# flags of the built-in review task (DemoConfig fields) and of the real-model harmless tier (HarmlessConfig)
FLAGS = ("model", "dataset", "text_column", "split", "prompt_words", "output_dir", "cache_dir", "seed",
         "pretrain_steps", "num_prompts", "method_steps", "online_reward", "eval_prompts", "eval_samples", "threads")
HARMLESS_FLAGS = ("model", "dataset", "reward_model", "output_dir", "cache_dir", "seed", "rm_pairs", "rm_steps",
                  "num_prompts", "num_samples", "max_new_tokens", "method_steps", "eval_pairs", "eval_prompts",
                  "eval_samples", "threads")
HELPS = {
    "model": "a causal LM (Hub id, local folder, .gguf or alias) to align instead of the built-in tiny review "
             "model; the alias smollm2-135m-instruct runs the harmless tier (--task harmless)",
    "dataset": "reviews: a dataset (Hub id, folder or file) whose text column gives the prompts, e.g. imdb; "
               "harmless: HH-style pairs (default: ../shared/data's HH harmless file, else the package's own pairs)",
    "text_column": "the dataset column whose first words become prompts",
    "split": "the dataset split to read",
    "prompt_words": "words of each dataset text kept as a prompt",
    "output_dir": "where the compare runs and the report go",
    "cache_dir": "cache of the base model, data and reward model (default: $ALIGNKIT_CACHE/demo, "
                 "$XDG_CACHE_HOME/alignkit/demo or ~/.cache/alignkit/demo)",
    "seed": "seed of the corpus, the models, sampling and training",
    "pretrain_steps": "pretraining steps of the built-in model (32 reviews each)",
    "num_prompts": "training prompts (reviews: each sampled 4 times for the preference data; harmless: the "
                   "policy's pairs)",
    "method_steps": "optimizer steps per method (RAFT: in all stages; PPO: iterations)",
    "online_reward": "training reward of RAFT and PPO: reward_model (RLHF) or vader",
    "eval_prompts": "held-out prompts sampled by every model",
    "eval_samples": "samples per held-out prompt",
    "threads": "torch CPU threads (0: 1 for the built-in tiny model, torch's default with --model)",
    "reward_model": "the encoder the judge reward model starts from",
    "rm_pairs": "pairs of the reward model's split (disjoint from the policy's and the held-out pairs)",
    "rm_steps": "reward-model optimizer steps of 16 pairs",
    "num_samples": "start-model replies added to each listwise DPO list (with the human chosen and rejected)",
    "max_new_tokens": "reply length in tokens (lists, RAFT, PPO and evaluation)",
    "eval_pairs": "held-out pairs of the implicit-reward preference accuracy",
}


def _task(args: argparse.Namespace) -> str:
    """--task, else harmless for a real chat model alias (smollm2-135m-instruct), else reviews."""
    from alignkit.models.gguf import GGUF_ALIASES

    if args.task:
        return args.task
    return "harmless" if args.model and args.model.lower() in GGUF_ALIASES else "reviews"


def _add_args(p: argparse.ArgumentParser) -> None:
    from alignkit.demo.harmless import HarmlessConfig

    reviews, harmless = DemoConfig(), HarmlessConfig()
    for name in dict.fromkeys(FLAGS + HARMLESS_FLAGS):
        defaults = []
        if name in FLAGS:
            defaults.append(f"{getattr(reviews, name)!r}")
        if name in HARMLESS_FLAGS:
            defaults.append(f"harmless: {getattr(harmless, name)!r}")
        value = getattr(reviews if name in FLAGS else harmless, name)
        kwargs = {"choices": ["reward_model", "vader"]} if name == "online_reward" else {}
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                       help=f"{HELPS[name]} (default: {'; '.join(defaults)})", **kwargs)
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods to compare (default: {','.join(DEFAULT_METHODS)}; "
                        f"harmless: {','.join(HarmlessConfig().methods)})")
    p.add_argument("--task", choices=["reviews", "digits", "harmless", "maxmin"], default=None,
                   help="reviews: align the tiny review model (language); harmless: align a real chat model "
                        "(default smollm2-135m-instruct) for harmlessness on HH-RLHF pairs, judged by a MiniLM "
                        "reward model trained on a disjoint split; digits: align a class-conditional "
                        "diffusion model of scikit-learn's digits with RAFT, DDPO, D3PO and Diffusion-DPO "
                        "(--output-dir, --cache-dir, --seed, --threads, --methods and --seeds apply); maxmin: "
                        "MaxMin-RLHF on reviews labelled by two groups of annotators, a majority preferring "
                        "positive sentiment and a minority brevity (--output-dir, --cache-dir, --threads, --seeds "
                        "and --method-steps apply). "
                        "Default: harmless for --model smollm2-135m-instruct, else reviews")
    p.add_argument("--seeds", type=int, default=1, help="--task digits, maxmin: training seeds (default: 1)")
    p.add_argument("--minority", default=None, choices=["brevity", "negativity"],
                   help="--task maxmin: what the minority prefers: brevity (the shorter answer; default) or "
                        "negativity (the more negative answer, opposing the majority)")
    p.add_argument("--resume", action="store_true", help="reuse method runs already finished in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _given(args: argparse.Namespace, allowed: tuple[str, ...], task: str) -> dict:
    """The flags given on the command line; one that the task does not read is an error."""
    given = {name: getattr(args, name) for name in dict.fromkeys(FLAGS + HARMLESS_FLAGS)
             if getattr(args, name) is not None}
    stray = [name for name in given if name not in allowed]
    if stray:
        flags = ", ".join("--" + n.replace("_", "-") for n in stray)
        raise ConfigError(f"alignkit demo --task {task}: {flags} does not apply to this task")
    return given


@command("demo", "the quick start: align a tiny review model to positive sentiment (VADER) with SFT, DPO, "
                 "SimPO, RRHF, PRO, listwise DPO, RAFT and PPO on a CPU, offline, and compare them; "
                 "--model smollm2-135m-instruct: align a real chat model for harmlessness",
         _add_args)
def demo_command(args: argparse.Namespace) -> int:
    task = _task(args)
    if args.minority is not None and task != "maxmin":
        raise ConfigError(f"alignkit demo --task {task}: --minority applies to --task maxmin only")
    if task == "harmless":
        return _harmless(args)
    defaults = DemoConfig()
    for name in FLAGS:  # the review and digits tasks read every flag (with its default)
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    args.methods = args.methods or ",".join(DEFAULT_METHODS)
    if task == "digits":
        from alignkit.diffusion.cli import run_digits_command

        return run_digits_command(args)
    if task == "maxmin":
        return _maxmin(args)
    return _reviews(args)


def _methods(args: argparse.Namespace) -> dict:
    return {"methods": [m.strip() for m in args.methods.split(",") if m.strip()]} if args.methods else {}


def _reviews(args: argparse.Namespace) -> int:
    from alignkit.demo.pipeline import run_demo

    _given(args, FLAGS, "reviews")
    values = {name: getattr(args, name) for name in FLAGS}
    cfg = DemoConfig(**values, **_methods(args), fresh=not args.resume, progress=not args.no_progress)
    t0 = time.perf_counter()
    result = run_demo(cfg)
    print()
    print(result.table)
    print()
    print("mean VADER reward of fresh samples on held-out prompts:")
    for label, value in sorted(result.vader.items(), key=lambda kv: -kv[1]):
        print(f"  {label:14s} {value:+.3f}")
    print(f"reward model: held-out ranking accuracy {result.reward_model_accuracy:.3f}")
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total")
    print(f"time: {time.perf_counter() - t0:.0f}s ({stages}{', base cached' if result.cached else ''})")
    print(f"report: {(result.report_dir / 'report.html').resolve()}")
    return 0


def _harmless(args: argparse.Namespace) -> int:
    from alignkit.demo.harmless import HarmlessConfig, run_harmless

    values = _given(args, HARMLESS_FLAGS, "harmless")
    if "output_dir" not in values:
        values["output_dir"] = HarmlessConfig().output_dir
    cfg = HarmlessConfig(**values, **_methods(args), fresh=not args.resume, progress=not args.no_progress)
    t0 = time.perf_counter()
    result = run_harmless(cfg)
    print()
    print(result.table)
    print(f"judge (reward model): held-out pairwise accuracy {result.reward_model_accuracy:.3f}")
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total")
    print(f"time: {time.perf_counter() - t0:.0f}s ({stages}{', data cached' if result.cached else ''})")
    print(f"summary: {result.summary.resolve()}")
    print(f"report: {(result.report_dir / 'report.html').resolve()}")


def _maxmin(args: argparse.Namespace) -> int:
    import torch

    from alignkit.demo.maxmin import MaxMinExperiment, run_experiment

    torch.set_num_threads(args.threads or 1)  # the tiny review model gains little from more threads
    output_dir = "runs/maxmin" if args.output_dir == DemoConfig().output_dir else args.output_dir
    exp = MaxMinExperiment(output_dir=output_dir, seeds=list(range(args.seeds)), cache_dir=args.cache_dir,
                           minority=args.minority or "brevity",
                           rl_steps=30 if args.method_steps == DemoConfig().method_steps else args.method_steps,
                           progress=not args.no_progress)
    t0 = time.perf_counter()
    print(run_experiment(exp))
    print(f"time: {time.perf_counter() - t0:.0f}s; runs and table.md in {output_dir}")
    return 0


__all__ = ["demo_command"]
