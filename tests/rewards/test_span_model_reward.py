"""A fine-grained reward model as a dense reward: segments, values, error rates, token positions."""

import pytest
import torch

from alignkit.models.span_model import SpanModelInfo, load_span_reward_model, save_span_reward_model
from alignkit.models.tiny import build_tiny_tokenizer
from alignkit.rewards import build_reward
from alignkit.rewards.mix import MixReward
from alignkit.rewards.span_model import SpanModelReward
from alignkit.train.rollout import segments_to_tokens


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_encoder):
    """A tiny sentence-level model whose head always says "error" (bias 0 vs 5, zero weights)."""
    root = tmp_path_factory.mktemp("span_rm")
    info = SpanModelInfo(level="sentence", categories=["Irrelevant"], max_length=64, error_reward=-1.0, ok_reward=0.5)
    model, tok = load_span_reward_model(tiny_encoder, info, init_from_base=True)
    with torch.no_grad():
        model.model.classifier.weight.zero_()
        model.model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    return save_span_reward_model(model, tok, root / "always_error")


def flip(reward):
    """The same model saying "no error" everywhere."""
    with torch.no_grad():
        reward.model.model.classifier.bias.copy_(torch.tensor([5.0, 0.0]))
    return reward


def test_every_segment_gets_its_value_at_its_end(saved):
    reward = build_reward({"kind": "span_model", "path": str(saved), "name": "relevance"})
    assert isinstance(reward, SpanModelReward) and reward.dense and reward.name == "relevance"
    responses = ["Good. Bad!", "   "]
    # sentences "Good." (end 5) and "Bad!" (end 10), each predicted an error: -1 each; the blank
    # response has no segment, so one zero segment at its end
    assert reward.score_segments(["q", "q"], responses) == [[(5, -1.0), (10, -1.0)], [(3, 0.0)]]
    scores, details = reward.score_with_details(["q", "q"], responses)
    torch.testing.assert_close(scores, torch.tensor([-2.0, 0.0]))
    torch.testing.assert_close(details["error_rate"], torch.tensor([1.0, 0.0]))
    flip(reward)
    assert reward.score_segments(["q"], ["Good. Bad!"]) == [[(5, 0.5), (10, 0.5)]]
    torch.testing.assert_close(reward.score_with_details(["q"], ["Good. Bad!"])[1]["error_rate"], torch.tensor([0.0]))


def test_segment_ends_land_on_the_policy_tokens_that_end_them(saved):
    policy_tok = build_tiny_tokenizer()
    reward = SpanModelReward.from_path(saved, device="cpu")
    text = "Good. Bad!"
    ids = policy_tok(text, add_special_tokens=False)["input_ids"] + [policy_tok.eos_token_id]
    # the policy's tokens G | ood | . | " " | B | ad | ! | EOS: "." is token 2 and "!" token 6
    # (tests/train/test_rollout.py works these offsets out by hand)
    assert segments_to_tokens(policy_tok, ids, reward.score_segments(["q"], [text])[0]) == [(2, -1.0), (6, -1.0)]


def test_mixed_with_weights_like_the_paper(saved):
    relevance = SpanModelReward.from_path(saved, device="cpu", name="relevance")
    factuality = flip(SpanModelReward.from_path(saved, device="cpu", name="factuality"))
    mix = MixReward([relevance, factuality], [0.3, 0.5])
    # relevance: -1 x 0.3 = -0.3 per sentence; factuality: +0.5 x 0.5 = 0.25 per sentence
    assert mix.score_segments(["q"], ["Good. Bad!"]) == [[(5, -0.3), (5, 0.25), (10, -0.3), (10, 0.25)]]
    torch.testing.assert_close(mix.score(["q"], ["Good. Bad!"]), torch.tensor([-0.1]))


def test_span_model_needs_a_path():
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"reward\.path: required"):
        build_reward({"kind": "span_model"})
