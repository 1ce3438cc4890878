"""A saved reward model as a Reward: centering, batching, order, no grad, config building."""

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.models.heads import ScalarHead, ValueModel, backbone_of
from alignkit.models.reward_model import RewardModel, reward_logits, save_reward_model
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer, tiny_model_dir
from alignkit.rewards import RewardSpec, build_reward
from alignkit.rewards.model import ModelReward

PROMPTS = ["Human: hi", "Human: how do I bake bread at home?", "Q", "Human: tell me a joke"]
RESPONSES = ["Hello!", "Mix flour, water, salt and yeast, then bake.", "A", "Why did the chicken cross?"]
CENTER = 0.75


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A causal reward model saved with a centering mean, and its raw scores."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    lm = build_tiny_model(tokenizer, hidden_size=32, num_layers=2)
    model = RewardModel("causal", ValueModel(backbone_of(lm), ScalarHead(32)), max_length=128).eval()
    with torch.no_grad():
        raw = reward_logits(model, tokenizer, PROMPTS, RESPONSES)
    out = save_reward_model(model, tokenizer, tmp_path_factory.mktemp("rm") / "rm", center_mean=CENTER)
    return out, raw


def test_scores_are_raw_minus_the_stored_mean(saved):
    path, raw = saved
    reward = ModelReward.from_path(path, device="cpu", name="rm")
    out = reward.score(PROMPTS, RESPONSES)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, raw - CENTER, rtol=0, atol=1e-5)


def test_batching_and_order_do_not_change_scores(saved):
    path, _ = saved
    one = ModelReward.from_path(path, device="cpu", batch_size=1)
    many = ModelReward.from_path(path, device="cpu", batch_size=3, progress=True)
    expected = torch.cat([one.score([p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(one.score(PROMPTS, RESPONSES), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(many.score(PROMPTS, RESPONSES), expected, rtol=1e-5, atol=1e-5)
    reversed_scores = many.score(PROMPTS[::-1], RESPONSES[::-1])
    torch.testing.assert_close(reversed_scores, expected.flip(0), rtol=1e-5, atol=1e-5)


def test_scoring_uses_eval_mode_and_restores_the_mode(saved):
    path, _ = saved
    reward = ModelReward.from_path(path, device="cpu")
    reward.model.train()
    first = reward.score(PROMPTS, RESPONSES)
    assert reward.model.training
    torch.testing.assert_close(reward.score(PROMPTS, RESPONSES), first)


def test_segments_hold_the_score_at_the_end(saved):
    path, _ = saved
    reward = ModelReward.from_path(path, device="cpu")
    segments = reward.score_segments(PROMPTS[:2], RESPONSES[:2])
    scores = reward.score(PROMPTS[:2], RESPONSES[:2]).tolist()
    assert segments == [[(len(RESPONSES[0]), scores[0])], [(len(RESPONSES[1]), scores[1])]]


def test_built_from_a_spec(saved):
    path, raw = saved
    reward = build_reward(RewardSpec(kind="model", path=str(path), batch_size=2, max_length=64))
    assert isinstance(reward, ModelReward) and reward.name == "rm" and reward.max_length == 64
    torch.testing.assert_close(reward.score(PROMPTS, RESPONSES), raw - CENTER, rtol=0, atol=1e-5)


def test_a_base_checkpoint_is_refused(tmp_path):
    base = tiny_model_dir(tmp_path / "base", hidden_size=32, num_layers=2)
    with pytest.raises(AlignkitError, match="without a trained reward head"):
        ModelReward.from_path(base, device="cpu")


def test_empty_batch(saved):
    path, _ = saved
    assert ModelReward.from_path(path, device="cpu").score([], []).shape == (0,)
