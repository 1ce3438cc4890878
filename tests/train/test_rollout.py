"""Rollouts: shapes and masks, log-probs and values against plain forwards, dense segments by hand."""

import copy

import pytest
import torch

from alignkit.engine.generation import SamplingConfig
from alignkit.models.heads import ScalarHead, ValueModel, backbone_of
from alignkit.models.reference import AdapterReference, FrozenReference
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.rewards import build_reward
from alignkit.train.rollout import (
    ActorCritic,
    PPOConfig,
    RunningMoments,
    collect_rollout,
    disable_dropout,
    reference_logprobs,
    response_batch,
    segments_to_tokens,
    task_rewards,
    token_char_ends,
)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def naive_token_logprobs(model, prompt, response):
    """log pi(response_t | prompt, response_<t) from one plain forward over prompt + response."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # the positions predicting the response
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def make_rollout(tok, model, critic="shared", prompts=("The movie was", "I", "This book is"), k=2, reward=None):
    disable_dropout(model)
    head = ScalarHead(model.config.hidden_size, init="normal") if critic == "shared" else None
    value_model = None
    if critic == "separate":
        value_model = ValueModel(copy.deepcopy(backbone_of(model)), ScalarHead(model.config.hidden_size))
    module = ActorCritic(model, head, value_model, pad_id=tok.pad_token_id)
    reference = FrozenReference(copy.deepcopy(model), tok.pad_token_id)
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    sampling = SamplingConfig(num_samples=k, max_new_tokens=8, seed=3)
    reward = reward or build_reward({"kind": "vader"})
    return module, collect_rollout(module, reference, reward, tok, prompt_ids, sampling)


def test_rollout_shapes_masks_and_logprobs_match_a_plain_forward(tok):
    model = build_tiny_model(tok)
    module, r = make_rollout(tok, model)
    B, K = 3, 2
    flat = [resp for rs in r.response_ids for resp in rs]
    lengths = torch.tensor([len(x) for x in flat])
    assert len(r.response_ids) == B and all(len(rs) == K for rs in r.response_ids)
    assert r.mask.shape == r.logprobs.shape == r.ref_logprobs.shape == r.values.shape == r.entropy.shape
    assert r.mask.shape == (B * K, int(lengths.max()))
    assert torch.equal(r.mask.sum(1), lengths)  # right-padded, True on response tokens only
    assert r.scores.shape == r.ended.shape == (B * K,)
    for t in (r.logprobs, r.ref_logprobs, r.values, r.entropy):
        assert torch.all(t[~r.mask] == 0)
    assert torch.all(r.logprobs[r.mask] <= 0)
    # row b * K + k is sample k of prompt b, and the texts are its decoded tokens
    assert r.prompts == [p for p in ["The movie was", "I", "This book is"] for _ in range(K)]
    assert r.texts == [tok.decode(x, skip_special_tokens=True) for x in flat]
    assert torch.equal(r.ended, torch.tensor([x[-1] == tok.eos_token_id for x in flat]))
    assert torch.equal(r.rows(torch.tensor([2, 0])), torch.tensor([4, 5, 0, 1]))
    # the engine's per-token log-probs (prompt-shared packing) equal a plain forward per sample,
    # and the reference (a copy of the same weights) gives the same numbers
    with torch.no_grad():
        for i, resp in enumerate(flat):
            expected = naive_token_logprobs(model, r.prompt_ids[i // K], resp)
            torch.testing.assert_close(r.logprobs[i, : len(resp)], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.ref_logprobs, r.logprobs, atol=1e-5, rtol=0)
    # the shared critic reads the hidden state that predicts each response token
    with torch.no_grad():
        resp = flat[0]
        states = backbone_of(model)(input_ids=torch.tensor([r.prompt_ids[0] + resp])).last_hidden_state[0]
        expected = module.value_head(states[len(r.prompt_ids[0]) - 1 : -1])
    torch.testing.assert_close(r.values[0, : len(resp)], expected, atol=1e-5, rtol=0)


def test_separate_critic_values_match_a_plain_forward(tok):
    model = build_tiny_model(tok)
    module, r = make_rollout(tok, model, critic="separate")
    assert module.value_head is None and r.values is not None
    with torch.no_grad():
        for i, resp in enumerate(x for rs in r.response_ids for x in rs):
            prompt = r.prompt_ids[i // 2]
            ids = torch.tensor([prompt + resp])
            values = module.critic(ids, torch.ones_like(ids))[0]  # V(s) at every position, (T,)
            torch.testing.assert_close(r.values[i, : len(resp)], values[len(prompt) - 1 : -1], atol=1e-5, rtol=0)


def test_no_critic_gives_no_values(tok):
    _, r = make_rollout(tok, build_tiny_model(tok), critic=None)
    assert r.values is None


def test_adapter_reference_is_the_base_model_with_the_adapter_off(tok):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_model(tok)
    untouched = copy.deepcopy(base)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # move the adapter away from its zero start, so that policy != base
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    module = ActorCritic(policy, pad_id=tok.pad_token_id)
    batch = response_batch([tok("The movie was")["input_ids"]], [[[300, 301, 1], [302, 1]]])
    ref = reference_logprobs(AdapterReference(module.scorer, tok.pad_token_id), batch)  # (2, 3)
    assert ref.shape == (2, 3)
    with torch.no_grad():
        torch.testing.assert_close(ref[0], naive_token_logprobs(untouched, batch.prompt_ids[0], [300, 301, 1]),
                                   atol=1e-5, rtol=0)
        out = module(batch, values=False)
    assert not torch.allclose(out.logprobs[0], ref[0], atol=1e-3)  # the adapter is back on for the policy


def test_character_ends_to_tokens_by_hand(tok):
    ids = tok("Good. Bad!", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids] == ["G", "ood", ".", " ", "B", "ad", "!"]
    # characters decoded after each token: G=1, ood=4, .=5, " "=6, B=7, ad=9, !=10
    assert token_char_ends(tok, ids) == [1, 4, 5, 6, 7, 9, 10]
    # VADER's sentences "Good." (end 5) and " Bad!" (end 10) land on "." (token 2) and "!" (token 6),
    # not on the EOS after them; end 0 goes on the first token, an end past the text on the last
    with_eos = ids + [tok.eos_token_id]
    assert segments_to_tokens(tok, with_eos, [(5, 0.44), (10, -0.58)]) == [(2, 0.44), (6, -0.58)]
    assert segments_to_tokens(tok, with_eos, [(0, 1.0), (11, 2.0)]) == [(0, 1.0), (7, 2.0)]


def test_a_character_split_across_tokens_ends_on_its_last_byte(tok):
    ids = tok("café! Bad.", add_special_tokens=False)["input_ids"]
    pieces = [tok.convert_ids_to_tokens(i) for i in ids]
    assert pieces == ["c", "af", "Ã", "©", "!", "Ġ", "B", "ad", "."]  # "é" is two byte tokens, "Ã" + "©"
    # "c"=1, "af"=3, half of "é" completes nothing (3), its second byte completes it (4), "!"=5, ...
    assert token_char_ends(tok, ids) == [1, 3, 3, 4, 5, 6, 7, 9, 10]
    assert segments_to_tokens(tok, ids, [(4, 1.0), (5, 2.0), (10, 3.0)]) == [(3, 1.0), (4, 2.0), (8, 3.0)]


def test_dense_rollout_puts_each_sentence_on_its_last_token(tok):
    reward = build_reward({"kind": "vader", "granularity": "sentence"})
    _, r = make_rollout(tok, build_tiny_model(tok), reward=reward)
    flat = [x for rs in r.response_ids for x in rs]
    assert r.segments is not None and len(r.segments) == len(flat)
    for ids, text, segs, score in zip(flat, r.texts, r.segments, r.scores.tolist()):
        char_segs = reward.score_segments([""], [text])[0]
        assert segs == segments_to_tokens(tok, ids, char_segs)
        assert all(0 <= t < len(ids) for t, _ in segs)
        assert score == pytest.approx(sum(v for _, v in segs), abs=1e-6)


def test_running_moments_equal_the_moments_of_everything_seen():
    torch.manual_seed(0)
    chunks = [torch.randn(n) * 3 + 1 for n in (5, 1, 17)]
    m = RunningMoments()
    for c in chunks:
        m.update(c)
    everything = torch.cat(chunks)
    assert m.count == 23
    assert m.mean == pytest.approx(float(everything.mean()), abs=1e-5)
    assert m.std == pytest.approx(float(everything.std(unbiased=False)), abs=1e-5)
    restored = RunningMoments()
    restored.load_state_dict(m.state_dict())
    assert restored.state_dict() == m.state_dict()


class FakeRollout:
    """What task_rewards reads: scores, ended, mask, segments."""

    def __init__(self, scores, ended, lengths, segments=None):
        self.scores = torch.tensor(scores)
        self.ended = torch.tensor(ended)
        self.mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
        self.segments = segments


def test_task_rewards_clip_normalise_and_penalise_missing_eos_by_hand():
    r = FakeRollout([3.0, -1.0, 0.5], [True, False, True], [2, 3, 1])
    moments = RunningMoments()
    moments.update(r.scores)  # mean 2.5/3 = 0.8333, population var = ((13/6)^2 + (11/6)^2 + (1/3)^2) / 3 = 2.7222
    plain, segments = task_rewards(r, PPOConfig(), moments)
    assert segments is None and torch.equal(plain, r.scores)
    # clip to [-2, 2], then 0.5 off the sample without EOS: [2, -1 - 0.5, 0.5]
    clipped, _ = task_rewards(r, PPOConfig(reward_clip=2.0, missing_eos_penalty=0.5), moments)
    torch.testing.assert_close(clipped, torch.tensor([2.0, -1.5, 0.5]))
    # (score - mean) / std with std = sqrt(2.7222) = 1.6499
    norm, _ = task_rewards(r, PPOConfig(center_rewards=True, scale_rewards=True), moments)
    torch.testing.assert_close(norm, torch.tensor([1.3132, -1.1112, -0.2020]), atol=1e-4, rtol=0)


def test_task_rewards_of_dense_segments_by_hand():
    # two responses of 3 and 2 tokens; segments (token, value)
    r = FakeRollout([1.5, -3.0], [True, False], [3, 2], segments=[[(0, 0.5), (2, 1.0)], [(1, -3.0)]])
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 3.0]))  # mean 2, std 1
    scores, segs = task_rewards(r, PPOConfig(reward_clip=2.0, center_rewards=True, missing_eos_penalty=1.0), moments)
    # each value clipped into [-2, 2]; -mean (and -penalty when there is no EOS) on the last token
    assert segs == [[(0, 0.5), (2, 1.0), (2, -2.0)], [(1, -2.0), (1, -2.0 - 1.0)]]
    torch.testing.assert_close(scores, torch.tensor([-0.5, -5.0]))


def test_a_rewards_details_are_logged_with_the_rollout(tok):
    """MaxMin-RLHF's min reward: each group's reward (its batch mean) is in the rollout's metrics."""
    from alignkit.rewards.minimum import MinReward
    from alignkit.rewards.simple import LengthReward

    reward = MinReward([LengthReward("chars", name="chars"), LengthReward("words", name="words")], over="sample")
    _, rollout = make_rollout(tok, build_tiny_model(tok, seed=0), reward=reward)
    chars = torch.tensor([float(len(t)) for t in rollout.texts])
    assert rollout.metrics["reward/chars"] == pytest.approx(float(chars.mean()))
    words = torch.tensor([float(len(t.split())) for t in rollout.texts])
    assert rollout.metrics["reward/words"] == pytest.approx(float(words.mean()))
    assert torch.equal(rollout.scores.cpu(), torch.minimum(chars, words))


def test_the_reward_reads_each_prompt_as_written_not_as_decoded_ids(tok):
    """Prompt ids are truncated to data.max_prompt_length (here: cut to 2 tokens): a reward that records its
    prompts sees the rows' own text where one is given, and the decoded ids where it is "" (a row built from ids)."""
    from alignkit.rewards.base import Reward

    class Recorder(Reward):
        name, dense = "recorder", False
        seen: list[str] = []

        def score(self, prompts, responses):
            self.seen.extend(prompts)
            return torch.zeros(len(prompts))

    model = build_tiny_model(tok, seed=0)
    module = ActorCritic(model, None, None, pad_id=tok.pad_token_id)
    ids = [tok("The Movie WAS")["input_ids"][:2], tok("I")["input_ids"]]
    reward = Recorder()
    collect_rollout(module, None, reward, tok, ids, SamplingConfig(num_samples=2, max_new_tokens=4, seed=1),
                    values=False, prompt_texts=["The Movie WAS", ""])
    assert reward.seen == ["The Movie WAS"] * 2 + [tok.decode(ids[1], skip_special_tokens=True)] * 2
    assert tok.decode(ids[0], skip_special_tokens=True) != "The Movie WAS"  # the case above is not vacuous
