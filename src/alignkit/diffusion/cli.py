"""``alignkit demo --task digits`` (the flags it shares with the language demo) and ``alignkit methods``' lines."""

from __future__ import annotations

import argparse
import time


def run_digits_command(args: argparse.Namespace) -> int:
    from alignkit.demo.pipeline import DEFAULT_METHODS
    from alignkit.diffusion.demo import DigitsDemoConfig, run_digits_demo

    cfg = DigitsDemoConfig(cache_dir=args.cache_dir, seed=args.seed, seeds=args.seeds, threads=args.threads,
                           progress=not args.no_progress)
    if args.output_dir != "runs/demo":  # the language demo's default: keep the two demos' runs apart
        cfg.output_dir = args.output_dir
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods != DEFAULT_METHODS:  # --methods given
        cfg.methods = methods
    t0 = time.perf_counter()
    result = run_digits_demo(cfg)
    print()
    print(result.table)
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items() if k != "total")
    print(f"time: {time.perf_counter() - t0:.0f}s ({stages}{', DDPM cached' if result.cached else ''})")
    print(f"report: {(result.report_dir / 'report.html').resolve()}")
    return 0


def method_lines() -> list[str]:
    """One line per diffusion method for ``alignkit methods``."""
    from alignkit.diffusion import DIFFUSION_METHODS, diffusion_hyperparameters
    from alignkit.diffusion.registry import reference_note

    lines = []
    for name, fn in sorted(DIFFUSION_METHODS.items()):
        hp = ", ".join(f"{k}={v}" for k, v in diffusion_hyperparameters(name).items())
        lines.append(f"{name:14s} diffusion ({fn.feedback}, {reference_note(name)}) {hp}".rstrip())
    return lines
