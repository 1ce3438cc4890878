"""Weighted mixes: score = sum_i w_i * r_i, the per-reward breakdown, and merged segments."""

import pytest
import torch

from alignkit.errors import ConfigError
from alignkit.rewards import build_reward
from alignkit.rewards.mix import MixReward
from alignkit.rewards.simple import FunctionReward, LengthReward

PROMPTS = ["a", "b"]
RESPONSES = ["one two three", "four!"]  # 3 words / 13 chars, 1 word / 5 chars


def bangs(prompts, responses):
    return [float(r.count("!")) for r in responses]


def halves(prompts, responses):
    return [[(len(r) // 2, 1.0), (len(r), 2.0)] for r in responses]


def test_weighted_sum_by_hand():
    mix = MixReward([LengthReward(), FunctionReward(bangs, name="bangs")], [0.5, -2.0])
    # response 1: 0.5 * 3 + (-2) * 0 = 1.5;  response 2: 0.5 * 1 + (-2) * 1 = -1.5
    torch.testing.assert_close(mix.score(PROMPTS, RESPONSES), torch.tensor([1.5, -1.5]))


def test_breakdown_is_raw_per_reward_and_combines_to_the_score():
    mix = MixReward([LengthReward(), FunctionReward(bangs, name="bangs")], [0.5, -2.0])
    parts = mix.breakdown(PROMPTS, RESPONSES)
    assert list(parts) == ["length", "bangs"]
    assert parts["length"].tolist() == [3.0, 1.0] and parts["bangs"].tolist() == [0.0, 1.0]
    torch.testing.assert_close(mix.combine(parts), mix.score(PROMPTS, RESPONSES))


def test_segments_are_the_weighted_union_sorted_by_end():
    mix = MixReward(
        [LengthReward(unit="chars"), FunctionReward(halves, name="halves", dense=True)], [1.0, 3.0]
    )
    assert mix.dense
    segments = mix.score_segments(PROMPTS, RESPONSES)
    # response 1 (13 chars): halves gives (6, 3*1) and (13, 3*2); length gives (13, 13); ties keep component order
    assert segments[0] == [(6, 3.0), (13, 13.0), (13, 6.0)]
    assert segments[1] == [(2, 3.0), (5, 5.0), (5, 6.0)]
    # and the score is still the sum of the segments
    assert mix.score(PROMPTS, RESPONSES).tolist() == [sum(v for _, v in s) for s in segments]


def test_built_from_a_list_of_specs():
    mix = build_reward(
        [{"kind": "length", "weight": 2.0}, {"kind": "length", "unit": "chars", "name": "chars"}]
    )
    assert isinstance(mix, MixReward) and mix.weights == [2.0, 1.0]
    assert mix.score(PROMPTS, RESPONSES).tolist() == [2 * 3 + 13, 2 * 1 + 5]


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="'length' is used twice"):
        build_reward([{"kind": "length"}, {"kind": "length", "unit": "chars"}])


def test_one_weight_per_reward():
    with pytest.raises(ValueError, match="one weight per reward"):
        MixReward([LengthReward()], [1.0, 2.0])
