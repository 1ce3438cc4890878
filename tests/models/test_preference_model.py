"""The pairwise preference model: antisymmetric by construction, both responses always seen, saved and loaded
with its mark, and a reward model refused as one."""

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.models.preference_model import (
    encode_comparisons,
    is_preference_model,
    load_preference_model,
    preference_logits,
    save_preference_model,
)
from alignkit.models.reward_model import load_reward_model, save_reward_model

PROMPTS = ["Human: how do I bake bread?", "Human: hi"]
FIRST = ["Mix flour, water, salt and yeast, then bake it.", "Hello!"]
SECOND = ["No.", "Go away, I am busy with something far more important than you " * 8]


@pytest.fixture(scope="module")
def model(tiny_encoder):
    torch.manual_seed(0)
    model, tok = load_reward_model(tiny_encoder, kind="causal")
    model.max_length = 64
    return model.eval(), tok


def test_antisymmetric_by_construction(model):
    """g(x, a, b) = -g(x, b, a), so P(a > b) = 1 - P(b > a); P(a > a) = 1/2, whatever the weights."""
    m, tok = model
    with torch.no_grad():
        ab = preference_logits(m, tok, PROMPTS, FIRST, SECOND)
        ba = preference_logits(m, tok, PROMPTS, SECOND, FIRST)
        aa = preference_logits(m, tok, PROMPTS, FIRST, FIRST)
    assert ab.abs().min() > 0  # an untrained head still tells the orders apart
    assert torch.equal(ab, -ba)
    assert torch.allclose(torch.sigmoid(ab) + torch.sigmoid(ba), torch.ones(2))
    assert torch.equal(aa, torch.zeros(2))


def test_both_responses_are_kept_when_one_is_long(model):
    """Each response keeps its first max_length // 3 tokens: the short second response is whole and after [SEP]."""
    _, tok = model
    enc = encode_comparisons(tok, ["Human: hi"], ["word " * 200], ["Short answer."], 64)
    text = tok.decode(enc["input_ids"][0], skip_special_tokens=False)
    assert enc["input_ids"].shape[1] <= 64
    assert "short answer." in text.lower() and text.count("[SEP]") >= 2


def test_saved_with_its_mark_and_reloaded(model, tmp_path):
    m, tok = model
    out = save_preference_model(m, tok, tmp_path / "pm")
    assert is_preference_model(out)
    loaded, tok2 = load_preference_model(out)
    with torch.no_grad():
        assert torch.allclose(preference_logits(loaded, tok2, PROMPTS, FIRST, SECOND),
                              preference_logits(m, tok, PROMPTS, FIRST, SECOND), atol=1e-6)


def test_a_reward_model_is_not_a_preference_model(model, tmp_path):
    m, tok = model
    out = save_reward_model(m, tok, tmp_path / "rm")
    with pytest.raises(AlignkitError, match="alignkit_preference.json"):
        load_preference_model(out)
