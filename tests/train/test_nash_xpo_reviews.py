"""Nash-MD and XPO judged by a trained preference model (slow): the review task of alignkit.demo.judge_task,
the MiniLM judge of configs/preference_model_reviews.yaml, and both methods from the demo's base model, judged
against it on held-out prompts by the judge and by VADER, the function behind the judge's labels."""

import json
from pathlib import Path

import pytest

from alignkit.config import load_config
from alignkit.train.run import run_train

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def review_task(tmp_path_factory):
    """The task (from the demo cache, built when absent) and its preference model, trained by the shipped config."""
    from alignkit.demo.judge_task import build_task

    root = tmp_path_factory.mktemp("reviews")
    build_task(root / "task")
    run_train(load_config(ROOT / "configs" / "preference_model_reviews.yaml", [
        f"data.train={root / 'task' / 'ranked.jsonl'}", f"train.output_dir={root / 'pm'}", "train.progress=false"]))
    return root


def test_the_preference_model_learns_vaders_order(review_task):
    """Held-out accuracy 0.853 on the 190 pairs of 32 prompts (README); chance is 1/2."""
    evals = [json.loads(x) for x in (review_task / "pm" / "metrics.jsonl").read_text().splitlines() if "eval/accuracy" in x]
    assert evals[-1]["eval/pairs"] == 190 and evals[-1]["eval/accuracy"] > 0.8


@pytest.mark.parametrize("method", ["nash_md", "xpo"])
def test_the_trained_policy_beats_the_start_under_the_judge_and_vader(review_task, tmp_path, method, load_benchmark):
    """benchmarks/nash_xpo_seeds.py --task: over seeds 0, 1 and 2, P_PM(trained > start) was 0.65-0.71 for both
    methods and VADER rose from 0.095 to 0.40-0.51 (README); asserted for seed 0 at the level every seed reached."""
    bench = load_benchmark("nash_xpo_seeds")
    out = tmp_path / method
    run_train(load_config(ROOT / "configs" / f"{method}_reviews.yaml", [
        f"train.output_dir={out}", "train.seed=0", "sampling.seed=0", "train.progress=false",
        *bench.run_overrides(str(review_task / "task"), str(review_task / "pm" / "final"))]))
    result = bench.final_against_initial(out, prompts=str(review_task / "task" / "eval_prompts.jsonl"))
    assert result["eval_samples"] == 256
    assert result["p_final_beats_initial"] > 0.6
    assert result["vader_final"] > result["vader_initial"] + 0.2
