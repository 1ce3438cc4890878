"""The Reward interface defaults, RewardSpec checks and the build_reward registry."""

import pytest
import torch

from alignkit.errors import ConfigError
from alignkit.rewards import REWARDS, Reward, RewardSpec, as_text, build_reward, sum_segments
from alignkit.rewards.mix import MixReward
from alignkit.rewards.simple import LengthReward


class Constant(Reward):
    name = "constant"

    def score(self, prompts, responses):
        return torch.full((len(responses),), 0.25)


def test_default_segments_hold_the_sequence_score_at_the_end():
    assert Constant().score_segments(["p", "q"], ["abc", ""]) == [[(3, 0.25)], [(0, 0.25)]]
    assert not Constant().dense


def test_sum_segments():
    total = sum_segments([[(2, 1.0), (5, -0.25)], [], [(1, 2.0)]])
    assert total.dtype == torch.float32 and total.tolist() == [0.75, 0.0, 2.0]


def test_registry_names():
    assert set(REWARDS) == {"vader", "length", "function", "model", "span_model", "preference_model", "min"}


def test_unknown_kind_names_the_key_and_the_allowed_values():
    with pytest.raises(
        ConfigError,
        match=r"reward\.kind: unknown reward 'sentiment'; choose one of: function, length, min, model, preference_model, span_model, vader",
    ):
        build_reward(RewardSpec(kind="sentiment"))
    with pytest.raises(ConfigError, match=r"rewards\[1\]\.kind: unknown reward 'nope'"):
        build_reward([{"kind": "length"}, {"kind": "nope"}])


def test_dict_specs_are_checked_key_by_key():
    with pytest.raises(ConfigError, match=r"reward\.weigth: unknown key; allowed: kind, name, weight"):
        build_reward({"kind": "length", "weigth": 2})
    with pytest.raises(ConfigError, match=r"reward\.kind: required"):
        build_reward({"name": "x"})
    with pytest.raises(ConfigError, match=r"reward\.granularity: 'token' is not one of: sequence, sentence"):
        build_reward({"kind": "vader", "granularity": "token"})
    with pytest.raises(ConfigError, match=r"rewards: the list is empty"):
        build_reward([])


def test_model_spec_needs_a_path_and_is_sequence_level():
    with pytest.raises(ConfigError, match=r"reward\.path: required"):
        build_reward(RewardSpec(kind="model"))
    with pytest.raises(ConfigError, match=r"reward\.granularity"):
        build_reward(RewardSpec(kind="model", path="minilm", granularity="sentence"))


def test_a_weighted_single_spec_scales_its_reward():
    plain = build_reward(RewardSpec(kind="length"))
    scaled = build_reward(RewardSpec(kind="length", weight=-0.5))
    assert isinstance(plain, LengthReward)
    assert isinstance(scaled, MixReward) and scaled.name == "length"
    assert scaled.score(["p"], ["a b c d"]).tolist() == [-2.0]


def test_a_list_of_one_spec_is_that_reward():
    assert isinstance(build_reward([RewardSpec(kind="length")]), LengthReward)
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.kind: required"):
        build_reward([RewardSpec()])


def test_specs_load_through_the_typed_config():
    config = pytest.importorskip("alignkit.config")
    spec = config.from_dict(RewardSpec, {"kind": "vader", "granularity": "sentence", "weight": 2})
    assert spec == RewardSpec(kind="vader", granularity="sentence", weight=2.0)
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.unit: 'tokens' is not allowed"):
        config.from_dict(RewardSpec, {"kind": "length", "unit": "tokens"}, prefix="rewards[0]")
    assert config.from_dict(RewardSpec, {"kind": "model", "path": "x", "max_length": 256}).max_length == 256


def test_as_text_renders_chat_as_role_lines():
    assert as_text("plain") == "plain"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!\nHow can I help?"}]
    assert as_text(chat) == "user: Hi\nassistant: Hello!\nHow can I help?"
