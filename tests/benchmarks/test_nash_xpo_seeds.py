"""benchmarks/nash_xpo_seeds.py's final comparison: the start and the trained policy sampled with one seed and
compared pair by pair by the run's own judge (a preference model's P, or a reward's Bradley-Terry P)."""

import json
import math
from pathlib import Path

import pytest

from alignkit.config import load_config
from alignkit.train.run import run_train
from alignkit.train.sampling import load_model

ROOT = Path(__file__).resolve().parents[2]






def tiny_run(tmp_path, judge: str) -> Path:
    out = tmp_path / "run"
    run_train(load_config(ROOT / "configs" / "nash_md_tiny.yaml", [
        f"train.output_dir={out}", f"rewards=[{judge}]", "online.stages=1", "online.prompts_per_stage=2",
        "sampling.num_samples=1", "sampling.max_new_tokens=6", "train.max_steps=1", "train.progress=false"]))
    return out


@pytest.mark.parametrize("judge", ["preference_model", "length"])
def test_a_policy_against_itself_is_an_even_game_on_the_given_prompts(tmp_path, tiny_judge_path, judge, load_benchmark):
    """The trained folder replaced by the starting model: both policies draw the same samples with the one
    sampling seed, so every pair is (y, y) and P(y > y) = 1/2 exactly (a judge's antisymmetry; a reward's
    sigmoid(0)), VADER equal. 3 held-out prompts x 2 samples = 6 pairs."""
    spec = f"{{kind: preference_model, path: {tiny_judge_path}}}" if judge == "preference_model" else "{kind: length}"
    run = tiny_run(tmp_path, spec)
    cfg = load_config(run / "config.yaml")
    start, tok = load_model(cfg)
    start.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    prompts = tmp_path / "held_out.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["The film was", "I think", "This camera"]))
    result = load_benchmark("nash_xpo_seeds").final_against_initial(run, samples_per_prompt=2, prompts=str(prompts))
    assert result["eval_samples"] == 6 and result["eval_prompts"] == str(prompts)
    assert result["p_final_beats_initial"] == 0.5 and result["p_final_beats_initial_se"] == 0.0
    assert result["vader_initial"] == result["vader_final"]
    assert ("initial_reward" in result) == (judge == "length")


def test_a_trained_policy_is_judged_by_the_preference_models_own_probability(tmp_path, tiny_judge_path, load_benchmark):
    """Without a prompts file, every training prompt (24) x 2 samples; after one step some samples differ, so P
    moves off 1/2."""
    run = tiny_run(tmp_path, f"{{kind: preference_model, path: {tiny_judge_path}}}")
    result = load_benchmark("nash_xpo_seeds").final_against_initial(run, samples_per_prompt=2)
    assert result["eval_samples"] == 2 * 24 and 0.0 < result["p_final_beats_initial"] < 1.0
    assert result["p_final_beats_initial"] != 0.5 and result["p_final_beats_initial_se"] > 0
    assert not math.isnan(result["vader_final"])


def test_the_review_task_overrides_name_its_base_prompts_and_judge(load_benchmark):
    assert load_benchmark("nash_xpo_seeds").run_overrides("T", "J") == ["model.name_or_path=T/base", "data.train=T/prompts.jsonl",
                                                     "rewards=[{kind: preference_model, path: J}]"]
    assert load_benchmark("nash_xpo_seeds").run_overrides("", "J") == []
