"""The engine against a naive full-logits reference (log_softmax over all positions, gather)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from alignkit.data.schema import TokenizedExample
from alignkit.engine import SequenceScorer, collate, sequence_logps

VOCAB, PAD = 97, 0


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=PAD, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=PAD)
    return GPT2LMHeadModel(cfg).eval()


def naive_logps(model, prompt, response):
    """Sum of log p(response | prompt) from full logits: the definition the engine must match."""
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # [T, V]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return logp[positions, torch.tensor(response)]  # [L]


def random_batch(seed=0, k_choices=(1, 2, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    examples = []
    for b in range(4):
        k = k_choices[b % len(k_choices)]
        prompt = torch.randint(1, VOCAB, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
        responses = [
            torch.randint(1, VOCAB, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist()
            for _ in range(k)
        ]
        examples.append(TokenizedExample(prompt, responses, scores=list(range(k, 0, -1))))
    return collate(examples)


@pytest.mark.parametrize("share_prompt,side", [(True, "right"), (False, "right"), (False, "left")])
@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2])
def test_engine_equals_naive_full_logits(share_prompt, side, make_model):
    model = make_model()
    batch = random_batch()
    out = sequence_logps(SequenceScorer(model, chunk_size=5), batch, pad_id=PAD, share_prompt=share_prompt,
                         per_token=True, padding_side=side)
    for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
        for k, resp in enumerate(responses):
            ref = naive_logps(model, prompt, resp)
            torch.testing.assert_close(out.logps[b, k], ref.sum(), atol=1e-5, rtol=0)
            torch.testing.assert_close(out.token_logps[b, k, : len(resp)], ref, atol=1e-5, rtol=0)
            assert out.lengths[b, k] == len(resp)
        assert not out.mask[b, len(responses):].any()
        assert (out.logps[b, len(responses):] == 0).all()
    assert out.token_mask.sum() == out.lengths.sum()


def test_packing_probe_accepts_sdpa_models_and_keeps_train_mode():
    for model in (tiny_llama(), tiny_gpt2()):
        model.train()
        scorer = SequenceScorer(model)
        assert scorer.supports_packing(PAD)
        assert model.training  # the probe runs in eval mode and restores the caller's mode


def test_packing_probe_refuses_a_model_that_rejects_4d_masks():
    model = tiny_llama()
    body_forward = model.model.forward

    def reject_4d(*args, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            raise ValueError("4-D masks unsupported")
        return body_forward(*args, attention_mask=attention_mask, **kwargs)

    model.model.forward = reject_4d
    scorer = SequenceScorer(model)
    assert not scorer.supports_packing(PAD)
    out = sequence_logps(scorer, random_batch(), pad_id=PAD)  # falls back to padded rows
    assert torch.isfinite(out.logps).all()


def test_gradients_equal_naive():
    batch = random_batch(seed=3)
    model_a, model_b = tiny_llama(1), tiny_llama(1)
    out = sequence_logps(SequenceScorer(model_a, chunk_size=3), batch, pad_id=PAD)
    (out.logps * torch.randn(out.logps.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    weights = torch.randn(out.logps.shape, generator=torch.Generator().manual_seed(0))
    total = 0
    for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
        for k, resp in enumerate(responses):
            total = total + weights[b, k] * naive_logps(model_b, prompt, resp).sum()
    total.backward()
    for (name, pa), (_, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_entropy_and_hidden_outputs():
    model = tiny_llama()
    batch = random_batch(seed=5)
    out = sequence_logps(SequenceScorer(model), batch, pad_id=PAD, entropy=True, hidden=True)
    prompt, resp = batch.prompt_ids[0], batch.response_ids[0][0]
    logits = model(torch.tensor([prompt + resp])).logits[0, len(prompt) - 1 : len(prompt) + len(resp) - 1]
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(out.entropy[0, 0, : len(resp)], -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=0)
    assert out.hidden.shape[:3] == out.token_mask.shape and out.hidden.shape[-1] == 32
    assert (out.entropy[~out.token_mask] == 0).all()


def test_mean_nll_matches_token_mean():
    model = tiny_llama()
    batch = random_batch(seed=7)
    out = sequence_logps(SequenceScorer(model), batch, pad_id=PAD)
    expected = -out.logps[out.mask].sum() / out.lengths[out.mask].sum()
    torch.testing.assert_close(out.mean_nll(), expected)
