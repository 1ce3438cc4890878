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
    from pathlib import Path

    import yaml

    from alignkit.errors import ConfigError
    from alignkit.rewards.base import build_reward
    from alignkit.rewards.score_file import score_file

    path = Path(args.reward)
    if not path.is_file():
        raise ConfigError(f"{path}: reward config not found")
    spec = yaml.safe_load(path.read_text())
    if isinstance(spec, dict) and "rewards" in spec:
        spec = spec["rewards"]
    if not spec:
        raise ConfigError(f"{path}: no reward spec; write e.g. `kind: vader`")
    reward = build_reward(spec)
    out = Path(args.out or str(args.data).removesuffix(".gz").rsplit(".", 1)[0] + ".scored.jsonl")
    n = score_file(reward, args.data, out)
    print(f"scored {n} rows -> {out}")
    return 0
