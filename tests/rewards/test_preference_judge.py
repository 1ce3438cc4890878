"""A preference model as a judge: P(a beats b) for eval's win rate and Nash-MD, and the Bradley-Terry
probability of a plain reward in the same place."""

import math

import torch

from alignkit.eval.runner import EvalConfig
from alignkit.eval.sample_metrics import judge_win_rate
from alignkit.rewards import RewardSpec, build_reward
from alignkit.rewards.preference import PreferenceJudge, win_probability
from alignkit.rewards.simple import LengthReward


def test_a_reward_compares_by_its_bradley_terry_probability():
    """Lengths 3 and 1 words: P = sigmoid(3 - 1) = 0.8808."""
    p = win_probability(LengthReward(), ["x"], ["a b c"], ["d"])
    assert math.isclose(float(p[0]), 1 / (1 + math.exp(-2)), rel_tol=1e-6)


def test_a_judge_compares_by_its_own_probability(tiny_judge_path):
    judge = build_reward({"kind": "preference_model", "path": str(tiny_judge_path), "batch_size": 1})
    prompts, a, b = ["Human: hi"] * 3, ["Hello!", "No.", "Sure, here it is."], ["Go away.", "Yes.", "No."]
    p = win_probability(judge, prompts, a, b)
    assert torch.allclose(p, torch.sigmoid(judge.logits(prompts, a, b)))
    assert torch.allclose(p + win_probability(judge, prompts, b, a), torch.ones(3), atol=1e-6)


def test_eval_win_rate_with_a_preference_judge(tiny_judge_path):
    """Each response against the baseline: a win when P(response > baseline) > 1/2."""
    cfg = EvalConfig(prompts="unused", baseline="chosen", judge=RewardSpec(kind="preference_model", path=str(tiny_judge_path)))
    prompts, responses, baseline = ["Human: hi", "Human: bread?"], [["Hello!", "Meh"], ["Bake it."]], ["Go away.", "No."]
    result = judge_win_rate(cfg, prompts, [r for r in responses], baseline, {})
    judge = PreferenceJudge.from_path(tiny_judge_path)
    p = judge.compare(["Human: hi", "Human: hi", "Human: bread?"], ["Hello!", "Meh", "Bake it."], ["Go away.", "Go away.", "No."])
    wins = int((p > 0.5).sum())
    assert (result["win"], result["loss"], result["n"]) == (wins, 3 - wins - result["tie"], 3)
    assert result["judge"] == "pm"


def test_a_sampling_stage_scores_a_prompts_candidates_together(tiny_judge_path):
    """With a judge, the stage's scores of a prompt's two candidates differ by the judge's log-odds, so
    Nash-MD's sigmoid(s(y) - s(y')) is the judge's own P(y > y')."""
    from alignkit.train.candidates import Candidates
    from alignkit.train.sampling import score_candidates

    judge = PreferenceJudge.from_path(tiny_judge_path)
    cands = Candidates.new(["Human: hi"], [[1]], [["Hello!", "Go away."]], [[[2], [3]]], [["policy", "mixture"]])
    score_candidates(judge, cands)
    g = judge.logits(["Human: hi"], ["Hello!"], ["Go away."])
    assert math.isclose(float(cands.scores[0, 0] - cands.scores[0, 1]), float(g[0]), abs_tol=1e-5)
