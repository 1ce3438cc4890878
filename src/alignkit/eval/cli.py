"""``alignkit eval``, ``alignkit compare`` and ``alignkit soup``: each takes a YAML config and overrides."""

from __future__ import annotations

import argparse

from alignkit.cli import _config_args, command


@command(
    "eval",
    "evaluate a model: rewards (and best-of-K), KL, perplexity, diversity, preference accuracy, "
    "win rate -> eval.json, samples.jsonl",
    _config_args,
)
def eval_command(args: argparse.Namespace) -> int:
    from alignkit.config import load_config
    from alignkit.eval.runner import EvalConfig, evaluate_model, format_table

    cfg = load_config(args.config, args.overrides, cls=EvalConfig)
    result = evaluate_model(cfg)
    print(format_table(result))
    print(f"wrote {cfg.output_dir}/eval.json and samples.jsonl")
    return 0


@command(
    "compare",
    "train several methods from one start with one budget and seed, evaluate each, and write "
    "a table, plots and an HTML report",
    _config_args,
)
def compare_command(args: argparse.Namespace) -> int:
    from alignkit.config import load_config
    from alignkit.eval.compare import CompareConfig, run_compare

    cfg = load_config(args.config, args.overrides, cls=CompareConfig)
    report = run_compare(cfg)
    print((report / "table.md").read_text(), end="")
    if (report / "matched_kl.md").is_file():  # a diffusion compare has no matched-KL table
        print("\n" + (report / "matched_kl.md").read_text(), end="")
    print(f"report: {report / 'report.html'}")
    return 0


@command(
    "soup",
    "rewarded soups: interpolate models fine-tuned on different rewards, evaluate every "
    "interpolation, report the Pareto front",
    _config_args,
)
def soup_command(args: argparse.Namespace) -> int:
    from alignkit.config import load_config
    from alignkit.eval.soup import SoupConfig, run_soup

    cfg = load_config(args.config, args.overrides, cls=SoupConfig)
    out = run_soup(cfg)
    print((out / "soup.md").read_text(), end="")
    print(f"report: {out}")
    return 0
