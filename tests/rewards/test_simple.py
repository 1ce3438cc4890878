"""Length and user-function rewards (the functions live in tests/rewards/user_rewards.py)."""

from pathlib import Path

import pytest
import torch

from alignkit.errors import AlignkitError, ConfigError
from alignkit.rewards import RewardSpec, build_reward
from alignkit.rewards.simple import FunctionReward, LengthReward

PROMPTS = ["Q1", "Question 2"]
RESPONSES = ["Yes! Sure!", "no"]


@pytest.fixture(autouse=True)
def user_module_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_length_in_words_and_chars():
    responses = ["one two  three", "", "a\nb"]
    assert LengthReward().score(["p"] * 3, responses).tolist() == [3.0, 0.0, 2.0]
    assert LengthReward(unit="chars").score(["p"] * 3, responses).tolist() == [14.0, 0.0, 3.0]
    assert build_reward({"kind": "length", "unit": "chars"}).score(["p"], ["abc"]).tolist() == [3.0]


def test_length_spec_checks_unit_and_granularity():
    with pytest.raises(ConfigError, match=r"reward\.unit: 'tokens' is not one of: words, chars"):
        build_reward(RewardSpec(kind="length", unit="tokens"))
    with pytest.raises(ConfigError, match=r"reward\.granularity"):
        build_reward(RewardSpec(kind="length", granularity="sentence"))


@pytest.mark.parametrize(
    "name, expected",
    [("exclamations", [2.0, 0.0]), ("as_numpy", [10.0, 2.0]), ("as_tensor", [2.0, 10.0])],
)
def test_function_returning_numbers(name, expected):
    reward = build_reward(RewardSpec(kind="function", function=f"user_rewards:{name}"))
    assert reward.name == name
    scores = reward.score(PROMPTS, RESPONSES)
    assert scores.dtype == torch.float32 and scores.tolist() == expected
    # sequence rewards have one segment ending at the end of the response
    assert reward.score_segments(PROMPTS, RESPONSES) == [[(10, expected[0])], [(2, expected[1])]]


def test_function_returning_segments_is_dense_and_sums():
    reward = FunctionReward("user_rewards:halves", dense=True)
    # returned unsorted: sorted by end; "Yes! Sure!" has 10 characters, "no" 2
    assert reward.score_segments(PROMPTS, RESPONSES) == [[(5, 1.0), (10, -0.5)], [(1, 1.0), (2, -0.5)]]
    assert reward.score(PROMPTS, RESPONSES).tolist() == [0.5, 0.5]


def test_function_given_as_a_callable():
    reward = FunctionReward(lambda p, r: [1.0] * len(r), name="ones")
    assert reward.score(PROMPTS, RESPONSES).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "target, message",
    [
        ("user_rewards", "give it as 'module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("broken_user_module:f", "RuntimeError: this module is broken on purpose"),
        ("user_rewards:missing", "has no attribute 'missing'"),
        ("user_rewards:NOT_CALLABLE", "is not callable \\(int\\)"),
    ],
)
def test_bad_function_target_raises_alignkit_error(target, message):
    with pytest.raises(AlignkitError, match=message) as info:
        build_reward(RewardSpec(kind="function", function=target))
    assert target in str(info.value)


@pytest.mark.parametrize(
    "name, message",
    [
        ("one_short", "returned shape \\(1,\\) for 2 responses"),
        ("column", "returned shape \\(2, 1\\) for 2 responses"),
        ("strings", "returned a list holding a str"),
        ("bad_segment", "segment ending at 15 in a response of 10 characters"),
    ],
)
def test_wrong_return_raises_alignkit_error(name, message):
    reward = FunctionReward(f"user_rewards:{name}")
    with pytest.raises(AlignkitError, match=message) as info:
        reward.score(PROMPTS, RESPONSES)
    assert f"user_rewards:{name}" in str(info.value) and "one float per response" in str(info.value)


def test_function_spec_needs_a_function():
    with pytest.raises(ConfigError, match=r"reward\.function: required"):
        build_reward(RewardSpec(kind="function"))
