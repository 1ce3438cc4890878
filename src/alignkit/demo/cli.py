"""``alignkit demo``: the first command to run; see :mod:`alignkit.demo.pipeline`."""

from __future__ import annotations

import argparse
import time

from alignkit.cli import command
from alignkit.demo.pipeline import DEFAULT_METHODS, DemoConfig

FLAGS = ("model", "dataset", "text_column", "split", "prompt_words", "output_dir", "cache_dir", "seed",
         "pretrain_steps", "num_prompts", "method_steps", "online_reward", "eval_prompts", "eval_samples", "threads")


def _add_args(p: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    helps = {
        "model": "a causal LM (Hub id or local folder) to align instead of the built-in tiny review model",
        "dataset": "a dataset (Hub id, folder or file) whose text column gives the prompts, e.g. imdb",
        "text_column": "the dataset column whose first words become prompts",
        "split": "the dataset split to read",
        "prompt_words": "words of each dataset text kept as a prompt",
        "output_dir": "where the compare runs and the report go",
        "cache_dir": "cache of the base model, data and reward model (default: $ALIGNKIT_CACHE/demo, "
                     "$XDG_CACHE_HOME/alignkit/demo or ~/.cache/alignkit/demo)",
        "seed": "seed of the corpus, the models, sampling and training",
        "pretrain_steps": "pretraining steps of the built-in model (32 reviews each)",
        "num_prompts": "training prompts (each sampled 4 times for the preference data)",
        "method_steps": "optimizer steps per method (RAFT: in all stages; PPO: iterations)",
        "online_reward": "training reward of RAFT and PPO: reward_model (RLHF) or vader",
        "eval_prompts": "held-out prompts sampled by every model",
        "eval_samples": "samples per held-out prompt",
        "threads": "torch CPU threads (0: 1 for the built-in tiny model, torch's default with --model)",
    }
    for name in FLAGS:
        value = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        kwargs = {"choices": ["reward_model", "vader"]} if name == "online_reward" else {}
        p.add_argument(flag, type=type(value), default=value, help=f"{helps[name]} (default: {value!r})", **kwargs)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated methods to compare (default: %(default)s)")
    p.add_argument("--task", choices=["reviews", "digits", "maxmin"], default="reviews",
                   help="reviews: align the tiny review model (language); digits: align a class-conditional "
                        "diffusion model of scikit-learn's digits with RAFT, DDPO, D3PO and Diffusion-DPO "
                        "(--output-dir, --cache-dir, --seed, --threads, --methods and --seeds apply); maxmin: "
                        "MaxMin-RLHF on reviews labelled by two groups of annotators, a majority preferring "
                        "positive sentiment and a minority brevity (--output-dir, --cache-dir, --threads, --seeds "
                        "and --method-steps apply)")
    p.add_argument("--seeds", type=int, default=1, help="--task digits, maxmin: training seeds (default: 1)")
    p.add_argument("--resume", action="store_true", help="reuse method runs already finished in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@command("demo", "the quick start: align a tiny review model to positive sentiment (VADER) with SFT, DPO, "
                 "SimPO, RRHF, PRO, listwise DPO, RAFT and PPO on a CPU, offline, and compare them",
         _add_args)
def demo_command(args: argparse.Namespace) -> int:
    from alignkit.demo.pipeline import run_demo

    if args.task == "digits":
        from alignkit.diffusion.cli import run_digits_command

        return run_digits_command(args)
    if args.task == "maxmin":
        return _maxmin(args)

    values = {name: getattr(args, name) for name in FLAGS}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = DemoConfig(**values, methods=methods, fresh=not args.resume, progress=not args.no_progress)
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


def _maxmin(args: argparse.Namespace) -> int:
    import torch

    from alignkit.demo.maxmin import MaxMinExperiment, run_experiment

    torch.set_num_threads(args.threads or 1)  # the tiny review model gains little from more threads
    output_dir = "runs/maxmin" if args.output_dir == DemoConfig().output_dir else args.output_dir
    exp = MaxMinExperiment(output_dir=output_dir, seeds=list(range(args.seeds)), cache_dir=args.cache_dir,
                           rl_steps=30 if args.method_steps == DemoConfig().method_steps else args.method_steps,
                           progress=not args.no_progress)
    t0 = time.perf_counter()
    print(run_experiment(exp))
    print(f"time: {time.perf_counter() - t0:.0f}s; runs and table.md in {output_dir}")
    return 0


__all__ = ["demo_command"]
