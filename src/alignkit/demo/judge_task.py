"""A preference-model judge for Nash-MD and XPO on the demo's reviews (issue 21).

Nash-MD and XPO ascend P(y > y') under a judge. This task gives them a trained one with a real
function behind its labels: the demo's pretrained tiny review model (the policy's start) and its
samples, K continuations of each training prompt ranked by VADER on the continuation (``ranked.jsonl``
of the cached demo, :func:`alignkit.demo.pipeline.prepare`, built when absent: the same samples the
demo's reward model and MaxMin's task learn from). A MiniLM preference model
(``configs/preference_model_reviews.yaml``) learns every strictly ordered pair of a prompt's samples
(the more positive one wins) and is the judge of ``configs/nash_md_reviews.yaml`` and
``configs/xpo_reviews.yaml``; ``benchmarks/nash_xpo_seeds.py --task`` judges the trained policies on
the held-out prompts with it and with VADER itself.

    python -c "from alignkit.demo.judge_task import build_task; build_task('runs/reviews_judge')"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILES = ("ranked.jsonl", "prompts.jsonl", "eval_prompts.jsonl")  # copied from the demo's cache folder


def build_task(out_dir: str | Path, cache_dir: str = "", progress: bool = False) -> dict[str, Any]:
    """Write ``out_dir/``: ``base/`` (the demo's base model), ``ranked.jsonl`` (the preference model's
    VADER-ranked samples of the training prompts), ``prompts.jsonl`` (the policy's training prompts, the
    same prompts), ``eval_prompts.jsonl`` (held-out prompts, seen by neither) and ``task.json`` (counts,
    returned)."""
    from alignkit.demo.pipeline import export_inputs

    out = Path(out_dir)
    folder = export_inputs(out, FILES, cache_dir, progress)
    counts = {name: sum(1 for line in (out / name).read_text().splitlines() if line.strip()) for name in FILES}
    info = {"rows": counts, "source": str(folder), "labels": "VADER compound of the continuation (higher wins)"}
    (out / "task.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
