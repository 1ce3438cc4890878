"""``alignkit score``: write a data file back with one score per response."""

from __future__ import annotations

import argparse

from alignkit.cli import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward", required=True, help="YAML file: a reward spec, a list of specs, or a config with `rewards:`")
    p.add_argument("--data", required=True, help="jsonl/json file with prompt + responses (or pairwise) rows")
    p.add_argument("--out", default="", help="output jsonl (default: DATA with .scored.jsonl)")


@command("score", "score every response of a data file with a reward (model, VADER, function, mix)", _args)
def score(args: argparse.Namespace) -> int:
    from alignkit.api import score as score_data

    out = score_data(args.reward, data=args.data, output=args.out)
    n = sum(1 for line in out.read_text().splitlines() if line.strip())
    print(f"scored {n} rows -> {out}")
    return 0
