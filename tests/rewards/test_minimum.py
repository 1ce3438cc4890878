"""MaxMin-RLHF's egalitarian reward: the minimum over group rewards, over the batch or per sample."""

from __future__ import annotations

import pytest

from alignkit.errors import ConfigError
from alignkit.rewards.base import build_reward
from alignkit.rewards.minimum import MinReward
from alignkit.rewards.simple import FunctionReward


def words(prompts, responses):
    return [float(len(r.split())) for r in responses]


def exclamations(prompts, responses):
    return [float(r.count("!")) for r in responses]


def groups():
    return [FunctionReward(words, name="wordy"), FunctionReward(exclamations, name="loud")]


RESPONSES = ["a b c !", "a !!!!", "a b"]  # wordy: 4, 2, 2 (mean 8/3); loud: 1, 4, 0 (mean 5/3)


def test_batch_min_gives_every_sample_the_group_with_the_lowest_batch_mean():
    """mean(wordy) = 8/3 > mean(loud) = 5/3, so the batch is scored by loud: [1, 4, 0]."""
    reward = MinReward(groups(), over="batch")
    assert reward.score(["p"] * 3, RESPONSES).tolist() == [1.0, 4.0, 0.0]
    _, details = reward.score_with_details(["p"] * 3, RESPONSES)
    assert details["wordy"].tolist() == [4.0, 2.0, 2.0] and details["min_group"].tolist() == [1.0, 1.0, 1.0]


def test_batch_min_switches_group_with_the_batch():
    """Drop the third response: wordy mean 3, loud mean 2.5 -> loud; add '!!!!!!' answers -> wordy."""
    reward = MinReward(groups(), over="batch")
    assert reward.score(["p"] * 2, RESPONSES[:2]).tolist() == [1.0, 4.0]
    assert reward.score(["p"] * 2, ["x !!!!!!", "y z !!!!!!"]).tolist() == [2.0, 3.0]  # wordy 2.5 < loud 6


def test_sample_min_takes_each_responses_worst_group():
    """min(4, 1) = 1, min(2, 4) = 2, min(2, 0) = 0."""
    reward = MinReward(groups(), over="sample")
    value, details = reward.score_with_details(["p"] * 3, RESPONSES)
    assert value.tolist() == [1.0, 2.0, 0.0] and details["min_group"].tolist() == [1.0, 0.0, 1.0]


def test_one_group_is_that_group():
    assert MinReward(groups()[:1]).score(["p"] * 3, RESPONSES).tolist() == [4.0, 2.0, 2.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="over"):
        MinReward(groups(), over="prompt")
    with pytest.raises(ValueError, match="distinct"):
        MinReward([groups()[0], groups()[0]])


def test_build_reward_min_needs_a_mixture_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"reward\.path: required"):
        build_reward({"kind": "min"})
    with pytest.raises(ConfigError, match="no group_0"):
        build_reward({"kind": "min", "path": str(tmp_path)})
