"""The eval's model-free measures: best-of-k by hand and by brute force, standard errors over prompts,
win rates by a reward judge and by a function judge, and every reward's diagnostics."""

import itertools
from pathlib import Path

import pytest
import torch

from alignkit.config import from_dict
from alignkit.eval.runner import EvalConfig
from alignkit.eval.sample_metrics import (
    best_of_k_curve,
    best_of_k_weights,
    evaluate_texts,
    per_prompt_stats,
    powers_of_two,
    score_all,
)
from alignkit.rewards.simple import LengthReward


def test_powers_of_two():
    assert powers_of_two(8) == [1, 2, 4, 8]
    assert powers_of_two(6) == [1, 2, 4, 6]
    assert powers_of_two(1) == [1]


def test_best_of_k_weights_by_hand():
    """n = 3, k = 2: the 3 pairs {1,2}, {1,3}, {2,3} have as best the 2nd, 3rd, 3rd lowest:
    weights (0, 1/3, 2/3) = C(i-1, 1) / C(3, 2) for i = 1, 2, 3."""
    assert best_of_k_weights(3, 2) == pytest.approx([0, 1 / 3, 2 / 3])
    assert best_of_k_weights(4, 1) == pytest.approx([0.25] * 4)  # k = 1: a uniform sample
    assert best_of_k_weights(4, 4) == pytest.approx([0, 0, 0, 1])  # k = n: the maximum


def test_best_of_k_curve_by_hand():
    """selector [1, 3, 2]: best-of-1 = mean 2, best-of-2 = (3 + 2 + 3) / 3 = 8/3, best-of-3 = 3.
    A second reward [10, 0, 5] read at the selected sample: 5, (0 + 5 + 0) / 3, 0."""
    sel = torch.tensor([[1.0, 3.0, 2.0]])
    curve = best_of_k_curve(sel, {"r": sel, "other": torch.tensor([[10.0, 0.0, 5.0]])}, [1, 2, 3])
    assert curve["k"] == [1, 2, 3]
    assert curve["rewards"]["r"]["mean"] == pytest.approx([2, 8 / 3, 3])
    assert curve["rewards"]["other"]["mean"] == pytest.approx([5, 5 / 3, 0])


def test_best_of_k_curve_matches_brute_force():
    """The estimator equals the average, over every k-subset, of the reward at the subset's argmax."""
    g = torch.Generator().manual_seed(0)
    sel, other = torch.rand(3, 5, generator=g), torch.randn(3, 5, generator=g)
    curve = best_of_k_curve(sel, {"other": other}, [1, 2, 3, 4, 5])
    for k in range(1, 6):
        per_prompt = []
        for p in range(3):
            subsets = list(itertools.combinations(range(5), k))
            per_prompt.append(
                sum(float(other[p, max(s, key=lambda i: sel[p, i])]) for s in subsets) / len(subsets)
            )
        assert curve["rewards"]["other"]["mean"][k - 1] == pytest.approx(sum(per_prompt) / 3)


def test_best_of_k_needs_enough_samples():
    with pytest.raises(ValueError, match="best-of-4"):
        best_of_k_curve(torch.zeros(1, 2), {"r": torch.zeros(1, 2)}, [4])


def test_per_prompt_stats_takes_the_error_over_prompts():
    """Prompt means 1 and 3: mean 2, sample std sqrt(2), s.e. sqrt(2) / sqrt(2) = 1."""
    stats = per_prompt_stats(torch.tensor([[0.0, 2.0], [3.0, 3.0]]))
    assert stats == pytest.approx({"mean": 2.0, "stderr": 1.0})


def test_win_rate_with_a_reward_judge_by_hand():
    """Length judge: 3 - 2 = 1 (win), 1 - 2 (loss), 2 - 2 and 2 - 2 (ties) -> (1 + 2/2) / 4 = 0.5.
    The third prompt has no baseline and is left out."""
    cfg = from_dict(EvalConfig, {"baseline": "b.jsonl", "judge": {"kind": "length"}})
    result, scores = evaluate_texts(
        cfg,
        ["p1", "p2", "p3"],
        [["a b c", "a"], ["x y", "x y"], ["z", "z"]],
        {"length": LengthReward()},
        ["a b", "x y", None],
    )
    assert result["win_rate"] == {
        "win": 1,
        "tie": 2,
        "loss": 1,
        "win_rate": 0.5,
        "n": 4,
        "judge": "length",
        "baseline": "b.jsonl",
    }
    assert scores["length"].tolist() == [[3, 1], [2, 2], [1, 1]]
    assert result["rewards"]["length"]["mean"] == pytest.approx(10 / 6)
    assert result["distinct_1"] == pytest.approx(6 / 10)  # tokens a b c a x y x y z z: {a b c x y z}


def pairwise_judge(prompts, responses, baselines):
    """+1 when the response is longer, -1 when shorter, 0 on equal lengths."""
    return [(len(r) > len(b)) - (len(r) < len(b)) for r, b in zip(responses, baselines)]


def test_win_rate_with_a_function_judge(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = from_dict(EvalConfig, {"baseline": "chosen", "judge": "test_sample_metrics:pairwise_judge"})
    result, _ = evaluate_texts(cfg, ["p", "q"], [["long one", "s"], ["same", "abc"]], {}, ["short", "same"])
    assert (
        result["win_rate"]["win"] == 1 and result["win_rate"]["tie"] == 1 and result["win_rate"]["loss"] == 2
    )
    assert result["win_rate"]["judge"] == "test_sample_metrics:pairwise_judge"


def test_score_all_adds_each_rewards_details_as_name_slash_detail():
    from alignkit.rewards.base import Reward

    class Halves(Reward):
        name = "halves"

        def score(self, prompts, responses):
            return torch.tensor([float(len(r)) for r in responses])

        def score_with_details(self, prompts, responses):
            return self.score(prompts, responses), {"error_rate": torch.tensor([0.5] * len(responses))}

    out = score_all({"halves": Halves(), "length": LengthReward(unit="chars")}, ["p", "q"], [["ab", "c"], ["d", "ef"]])
    assert sorted(out) == ["halves", "halves/error_rate", "length"]
    torch.testing.assert_close(out["halves"], torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
    torch.testing.assert_close(out["halves/error_rate"], torch.full((2, 2), 0.5))
