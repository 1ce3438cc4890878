"""``alignkit generate``: K sampled responses per prompt, scored when the config has rewards, to jsonl.

Prompts are those of ``data.train`` (any format; whole-text rows have none), the model is
``model``, sampling is ``sampling`` (K = ``sampling.num_samples``). The output, by default
``train.output_dir/samples.jsonl`` (``--output`` elsewhere), holds one row per prompt,
``{prompt, responses, scores}``: the ``ranked`` data format, so the file feeds back as
training data (``data.train: FILE``). A row holding an empty response (the model ended at
once) is a bad row for the loader: skip it with ``data.skip_bad_rows: true``. Without
``rewards`` the rows are ``{prompt, responses}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignkit.cli import _config_args, command


def _args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("-o", "--output", default="", help="jsonl file to write (default: train.output_dir/samples.jsonl)")


def generate_file(cfg, output: str | Path = "") -> tuple[Path, list[dict], dict[str, float]]:
    """Sample, score (when ``cfg.rewards``) and write; returns the path, the rows and the generation metrics."""
    from accelerate import PartialState

    from alignkit.rewards import build_reward
    from alignkit.train.candidates import write_jsonl
    from alignkit.train.sampling import ModelSource, gather, load_model, load_prompts, score_candidates

    reward = build_reward(cfg.rewards) if cfg.rewards else None
    policy, tokenizer = load_model(cfg)
    policy.to(PartialState().device)
    rows = load_prompts(cfg, tokenizer)
    candidates, metrics = gather([ModelSource("policy", policy, tokenizer, tokenizer, None)], rows, cfg.sampling,
                                 progress=cfg.train.progress)
    if reward is not None:
        score_candidates(reward, candidates)
    out_rows = [{k: r[k] for k in ("prompt", "responses", "scores") if k in r} for r in candidates.rows()]
    path = Path(output or Path(cfg.train.output_dir) / "samples.jsonl")
    write_jsonl(path, out_rows)
    return path, out_rows, metrics


@command(
    "generate",
    "sample sampling.num_samples responses per prompt of data.train with model (scored by rewards, if any) "
    "and write {prompt, responses, scores} jsonl",
    _args,
)
def generate(args: argparse.Namespace) -> int:
    from alignkit.api import generate as generate_rows
    from alignkit.config import load_config

    cfg = load_config(args.config, args.overrides)
    rows = generate_rows(config=cfg, output=args.output)
    path, metrics = rows.path, rows.metrics
    k = cfg.sampling.num_samples
    print(f"{len(rows)} prompts x {k} responses -> {path} ({metrics.get('gen/tokens_per_s', 0):.0f} tokens/s, "
          f"mean length {metrics.get('gen/mean_length', 0):.1f} tokens)")
    scores = [s for r in rows for s in r.get("scores", [])]
    if scores:
        print(f"mean reward {sum(scores) / len(scores):.4f}, best-of-{k} "
              f"{sum(max(r['scores']) for r in rows) / len(rows):.4f}")
    return 0
