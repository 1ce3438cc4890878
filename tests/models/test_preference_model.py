"""The pairwise preference model: antisymmetric by construction, both responses always seen, saved and loaded
with its mark, and a reward model refused as one."""

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.models.preference_model import (
    PREFERENCE_CONFIG,
    encode_comparisons,
    is_preference_model,
    load_preference_model,
    preference_logits,
    save_preference_model,
)
from alignkit.models.reward_model import RewardModel, load_reward_model, save_reward_model

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


def test_length_sorted_chunks_give_each_pair_its_own_result(model):
    """10 pairs of different lengths (two chunks of 8 rows, sorted by length, each padded to its own longest) score
    as each pair does alone."""
    m, tok = model
    prompts = [f"Human: question {'very ' * i}long?" for i in range(10)]
    first, second = [f"Answer {'and more ' * (i % 4)}." for i in range(10)], [f"No {'x ' * (9 - i)}" for i in range(10)]
    with torch.no_grad():
        together = preference_logits(m, tok, prompts, first, second)
        alone = torch.cat([preference_logits(m, tok, [p], [a], [b]) for p, a, b in zip(prompts, first, second)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_both_responses_are_kept_when_one_is_long(model):
    """Each response keeps its first third of the budget: the short second response is whole and after [SEP]."""
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


def test_layout_and_response_masks_by_hand(model):
    """[CLS] human : hi [SEP] hello ! [SEP] go away . [SEP]: y = positions 5-6, y' = 8-10. Cut to 12 tokens (8 of
    text): each response keeps its first 8 // 3 = 2 tokens, the prompt its last 8 - 2 - 1 = 5."""
    _, tok = model
    enc = encode_comparisons(tok, ["Human: hi"], ["Hello!"], ["Go away."], 64)
    assert tok.convert_ids_to_tokens(enc["input_ids"][0]) == [
        "[CLS]", "human", ":", "hi", "[SEP]", "hello", "!", "[SEP]", "go", "away", ".", "[SEP]"]
    assert enc["first_mask"][0].nonzero().flatten().tolist() == [5, 6]
    assert enc["second_mask"][0].nonzero().flatten().tolist() == [8, 9, 10]
    cut = encode_comparisons(tok, ["one two three four five six seven eight"], ["a b c d e f g"], ["x"], 12)
    assert tok.convert_ids_to_tokens(cut["input_ids"][0]) == [
        "[CLS]", "four", "five", "six", "seven", "eight", "[SEP]", "a", "b", "[SEP]", "x", "[SEP]"]
    assert cut["first_mask"][0].nonzero().flatten().tolist() == [7, 8]
    assert cut["second_mask"][0].nonzero().flatten().tolist() == [10]


class TokenIdScores(torch.nn.Module):
    """A stand-in body-and-head whose score of each token is its id, so f is checkable by hand."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter for RewardModel.device

    def forward(self, input_ids, attention_mask):
        return input_ids.float() + self.anchor


def test_g_is_the_difference_of_mean_token_scores_by_hand(model):
    """Token ids: hello 7592, ! 999; go 2175, away 2185, . 1012. f(x, y, y') = 4295.5 - 1790.667 = 2504.833 in either
    order of reading (scores here ignore context), so g = (2504.833 + 2504.833) / 2 = 2504.833."""
    _, tok = model
    ids = RewardModel("causal", TokenIdScores(), max_length=64)
    g = preference_logits(ids, tok, ["Human: hi"], ["Hello!"], ["Go away."])
    assert torch.allclose(g, torch.tensor([(7592 + 999) / 2 - (2175 + 2185 + 1012) / 3]))


def test_a_sequence_classifier_or_the_old_cls_layout_is_refused(tiny_encoder, tmp_path):
    classifier, tok = load_reward_model(tiny_encoder, kind="classifier")
    with pytest.raises(AlignkitError, match="reads a score at every token"):
        preference_logits(classifier, tok, PROMPTS, FIRST, SECOND)
    out = save_reward_model(classifier, tok, tmp_path / "old")
    (out / PREFERENCE_CONFIG).write_text('{"max_length": 64, "antisymmetric": true}\n')  # the [CLS] version's mark
    with pytest.raises(AlignkitError, match="older layout .* retrain"):
        load_preference_model(out)
