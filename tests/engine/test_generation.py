"""Sampling: seeded reproducibility, K samples per prompt, the stop at EOS, left padding, and best-of-K."""

import math

import pytest
import torch

from alignkit.engine.generation import SamplingConfig, best_of_k, sample
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.rewards.base import Reward


@pytest.fixture(scope="module")
def tiny():
    tok = build_tiny_tokenizer()
    return build_tiny_model(tok), tok


def prompt_ids(tok, texts=("The movie was", "Hello", "The food at this restaurant was")):
    return [tok(t)["input_ids"] for t in texts]


def test_same_seed_same_samples_other_seed_other_samples(tiny):
    model, tok = tiny
    cfg = SamplingConfig(num_samples=3, max_new_tokens=8, seed=7, batch_size=2)
    a, b = sample(model, tok, prompt_ids(tok), cfg), sample(model, tok, prompt_ids(tok), cfg)
    c = sample(model, tok, prompt_ids(tok), SamplingConfig(num_samples=3, max_new_tokens=8, seed=8, batch_size=2))
    assert a.response_ids == b.response_ids and a.texts == b.texts
    assert a.response_ids != c.response_ids


def test_sampling_leaves_the_global_rng_alone(tiny):
    model, tok = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample(model, tok, prompt_ids(tok), SamplingConfig(num_samples=2, max_new_tokens=4))
    torch.testing.assert_close(torch.rand(3), expected)


def test_k_samples_per_prompt_decoded_and_within_budget(tiny):
    model, tok = tiny
    ids = prompt_ids(tok)
    out = sample(model, tok, ids, SamplingConfig(num_samples=4, max_new_tokens=6, batch_size=2))
    assert out.prompt_ids == ids
    assert [len(rs) for rs in out.response_ids] == [4, 4, 4] and [len(ts) for ts in out.texts] == [4, 4, 4]
    for rs, ts in zip(out.response_ids, out.texts):
        for r, t in zip(rs, ts):
            assert 1 <= len(r) <= 6 and tok.pad_token_id not in r
            assert t == tok.decode(r, skip_special_tokens=True)
    assert out.metrics["gen/tokens_per_s"] > 0 and 1 <= out.metrics["gen/mean_length"] <= 6


def test_generation_stops_at_eos_and_keeps_it(tiny):
    """Make the greedy first token of prompt 0 an end token (through the generation config's eos ids):
    its response is that one token, while the other prompt of the batch goes on to the budget."""
    model, tok = tiny
    ids = prompt_ids(tok, ("The movie was", "Hello"))
    greedy = SamplingConfig(num_samples=1, max_new_tokens=6, temperature=0)
    free = sample(model, tok, ids, greedy)
    first = free.response_ids[0][0][0]
    assert first not in free.response_ids[1][0], "pick prompts whose greedy continuations differ"
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, first]
    try:
        stopped = sample(model, tok, ids, greedy)
    finally:
        model.generation_config.eos_token_id = saved
    assert stopped.response_ids[0] == [[first]]  # the end token is kept, nothing (no padding) after it
    assert stopped.response_ids[1] == free.response_ids[1] and len(stopped.response_ids[1][0]) == 6


def test_left_padding_does_not_change_greedy_continuations(tiny):
    model, tok = tiny
    ids = prompt_ids(tok)
    greedy = SamplingConfig(num_samples=1, max_new_tokens=6, temperature=0, batch_size=3)
    batched = sample(model, tok, ids, greedy).response_ids
    alone = [sample(model, tok, [p], greedy).response_ids[0] for p in ids]
    assert batched == alone


class CountLetter(Reward):
    name = "count_e"

    def score(self, prompts, responses):
        return torch.tensor([float(r.count("e")) for r in responses])


def test_best_of_k_returns_the_highest_reward_sample_of_each_prompt(tiny):
    model, tok = tiny
    cfg = SamplingConfig(num_samples=6, max_new_tokens=12, seed=3)
    best = best_of_k(model, tok, prompt_ids(tok), cfg, CountLetter())
    assert best.scores.shape == (3, 6)
    for b in range(3):
        texts = best.samples.texts[b]
        expected = max(range(6), key=lambda k: (texts[k].count("e"), -k))  # first of equals
        assert best.texts[b] == texts[expected]
        assert best.response_ids[b] == best.samples.response_ids[b][expected]
        assert best.rewards[b].item() == texts[expected].count("e") == best.scores[b].max().item()
    # the samples are those of sample() with the same config
    assert best.samples.response_ids == sample(model, tok, prompt_ids(tok), cfg).response_ids


def test_the_k_samples_of_a_prompt_share_one_prompt_forward(monkeypatch):
    """The shared prompt cache gives the very samples of K separate prompt forwards, and the model
    sees each prompt once (B rows), not K times."""
    from alignkit.engine import generation

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    lm = build_tiny_model(tok)
    prompts = [tok(p)["input_ids"] for p in ["The movie was", "I", "This book is really"]]
    cfg = SamplingConfig(num_samples=4, max_new_tokens=12, seed=3)
    widths = []
    hook = lm.register_forward_pre_hook(lambda m, a, k: widths.append(tuple(k["input_ids"].shape)), with_kwargs=True)
    shared = sample(lm, tok, prompts, cfg)
    hook.remove()
    assert widths[0] == (3, max(map(len, prompts)) - 1)  # the left-padded prompts less their last token, once
    assert all(w == (12, 1) for w in widths[1:])  # then one token per step for the B * K rows
    monkeypatch.setattr(generation, "_shared_prompt_cache", lambda *a: {})
    assert sample(lm, tok, prompts, cfg).response_ids == shared.response_ids


def test_a_decode_step_draws_from_p_and_reports_temperature_one_logprob_and_entropy():
    """p = (1/2, 0, 1/4, 1/4): entropy = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2; the zero-probability
    token is never drawn; frequencies match p; at temperature 0.5 the draws follow p^2 / sum p^2 =
    (2/3, 0, 1/6, 1/6) while the log-probs stay those of p (the distribution the losses train)."""
    from alignkit.engine.generation import sample_step

    p = torch.tensor([0.5, 0.0, 0.25, 0.25])
    logits = p.log().expand(40_000, 4).contiguous()
    torch.manual_seed(0)
    token, logp, entropy = sample_step(logits, SamplingConfig(temperature=1.0))
    torch.testing.assert_close(entropy, torch.full((40_000,), 1.5 * math.log(2)))
    torch.testing.assert_close(logp, p.log()[token])
    assert (token != 1).all()
    torch.testing.assert_close(torch.bincount(token, minlength=4).float() / 40_000, p, atol=0.01, rtol=0)
    token, logp, _ = sample_step(logits, SamplingConfig(temperature=0.5))
    freq = torch.bincount(token, minlength=4).float() / 40_000
    torch.testing.assert_close(freq, torch.tensor([2 / 3, 0, 1 / 6, 1 / 6]), atol=0.01, rtol=0)
    torch.testing.assert_close(logp, p.log()[token])
    token, _, _ = sample_step(logits, SamplingConfig(temperature=1.0, top_k=1))
    assert (token == 0).all()
