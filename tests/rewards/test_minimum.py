"""MaxMin-RLHF's egalitarian reward: the minimum over group rewards, over the batch or per sample."""

from __future__ import annotations

import json

import pytest
import torch

from alignkit.errors import ConfigError
from alignkit.models.heads import ScalarHead, ValueModel, backbone_of
from alignkit.models.reward_model import RewardModel, save_reward_model
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
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


def test_scales_change_which_group_is_worst_off():
    """Raw batch means: wordy 8/3 > loud 5/3, so raw picks loud. In units of scales (4, 1): wordy
    [4, 2, 2] / 4 = [1, 0.5, 0.5], mean 2/3 < loud 5/3, so the standardised minimum picks wordy."""
    reward = MinReward(groups(), over="batch", scales=[4.0, 1.0])
    value, details = reward.score_with_details(["p"] * 3, RESPONSES)
    assert value.tolist() == [1.0, 0.5, 0.5] and details["min_group"].tolist() == [0.0, 0.0, 0.0]
    assert details["wordy"].tolist() == [1.0, 0.5, 0.5] and details["loud"].tolist() == [1.0, 4.0, 0.0]
    # per sample too: min(1, 1) = 1 (the first group on a tie), min(0.5, 4) = 0.5, min(0.5, 0) = 0
    value, details = MinReward(groups(), over="sample", scales=[4.0, 1.0]).score_with_details(["p"] * 3, RESPONSES)
    assert value.tolist() == [1.0, 0.5, 0.0] and details["min_group"].tolist() == [0.0, 0.0, 1.0]


def test_one_group_is_that_group():
    assert MinReward(groups()[:1]).score(["p"] * 3, RESPONSES).tolist() == [4.0, 2.0, 2.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="over"):
        MinReward(groups(), over="prompt")
    with pytest.raises(ValueError, match="distinct"):
        MinReward([groups()[0], groups()[0]])
    for scales in ([1.0], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="scales must be 2 positive"):
            MinReward(groups(), scales=scales)


def test_build_reward_min_needs_a_mixture_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"reward\.path: required"):
        build_reward({"kind": "min"})
    with pytest.raises(ConfigError, match="no group_0"):
        build_reward({"kind": "min", "path": str(tmp_path)})


@pytest.fixture(scope="module")
def mixture_folder(tmp_path_factory):
    """A mixture's final/: group_0 saved with center_std 2, group_1 as a model saved before the std was
    stored (no center_std key), both the same tiny causal reward model centred at 0."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    lm = build_tiny_model(tokenizer, hidden_size=32, num_layers=2)
    model = RewardModel("causal", ValueModel(backbone_of(lm), ScalarHead(32)), max_length=64).eval()
    final = tmp_path_factory.mktemp("mixture") / "final"
    save_reward_model(model, tokenizer, final / "group_0", center_mean=0.0, center_std=2.0)
    old = save_reward_model(model, tokenizer, final / "group_1", center_mean=0.0) / "alignkit_reward.json"
    meta = json.loads(old.read_text())
    del meta["center_std"]
    old.write_text(json.dumps(meta))
    return final


def test_build_reward_min_scales_by_each_groups_stored_std(mixture_folder):
    """scale: std (the default) divides by the stored std, 1 for an old model; scale: none by nothing."""
    standardised = build_reward({"kind": "min", "path": str(mixture_folder), "over": "sample"})
    assert standardised.scales.tolist() == [2.0, 1.0]
    _, details = standardised.score_with_details(["Q"] * 2, ["A short answer.", "Another, longer answer."])
    torch.testing.assert_close(details["group_0"], details["group_1"] / 2)  # one model, scales 2 and 1
    raw = build_reward({"kind": "min", "path": str(mixture_folder), "scale": "none"})
    assert raw.scales.tolist() == [1.0, 1.0]


def test_build_reward_min_refuses_a_group_without_spread(mixture_folder, tmp_path):
    final = tmp_path / "final"
    for name in ("group_0", "group_1"):
        (final / name).mkdir(parents=True)
        for f in (mixture_folder / name).iterdir():
            (final / name / f.name).write_bytes(f.read_bytes())
    meta = json.loads((final / "group_1" / "alignkit_reward.json").read_text())
    (final / "group_1" / "alignkit_reward.json").write_text(json.dumps({**meta, "center_std": 0.0}))
    with pytest.raises(ConfigError, match=r"reward\.scale: .*group_1/alignkit_reward.json has center_std 0.0.*scale: none"):
        build_reward({"kind": "min", "path": str(final)})
    assert build_reward({"kind": "min", "path": str(final), "scale": "none"}).scales.tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match=r"reward\.scale: 'mad' is not one of: std, none"):
        build_reward({"kind": "min", "path": str(final), "scale": "mad"})
