"""``alignkit eval``, ``alignkit compare`` and ``alignkit soup``: each takes a YAML config and overrides, and is a
thin layer over the Python API (:func:`alignkit.api.evaluate`, :func:`~alignkit.api.compare`,
:func:`~alignkit.api.soup`): it loads the typed config (so errors name the file) and prints what comes back."""

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
    from alignkit.api import evaluate
    from alignkit.config import load_config
    from alignkit.eval.runner import EvalConfig, format_table

    cfg = load_config(args.config, args.overrides, cls=EvalConfig)
    result = evaluate(config=cfg)
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
    from alignkit.api import compare
    from alignkit.config import load_config
    from alignkit.eval.compare import CompareConfig

    report = compare(config=load_config(args.config, args.overrides, cls=CompareConfig))
    print((report / "table.md").read_text(), end="")
    if (report / "matched_kl.md").is_file():  # a diffusion compare has no matched-KL table
        print("\n" + (report / "matched_kl.md").read_text(), end="")
    print(f"report: {report / 'report.html'}")
    return 0


@command(
    "soup",
    "rewarded soups: interpolate models fine-tuned on different rewards (trained here, with the MORL "
    "baseline, when the config has train.start), evaluate every interpolation, report both fronts and the LMC check",
    _config_args,
)
def soup_command(args: argparse.Namespace) -> int:
    from alignkit.api import soup
    from alignkit.config import load_config
    from alignkit.eval.soup import SoupConfig

    out = soup(config=load_config(args.config, args.overrides, cls=SoupConfig), config_path=args.config)
    print((out / "soup.md").read_text(), end="")
    report = out / "report.md"
    if report.is_file():
        print("\n" + "\n".join(line for line in report.read_text().splitlines() if line.startswith("LMC ")))
    print(f"report: {report.with_suffix('.html') if report.is_file() else out}")
    return 0
