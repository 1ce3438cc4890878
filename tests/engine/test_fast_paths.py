"""The optimised paths (kept or recomputed softmax in the chunked head, vectorised layouts,
multi-group packed rows, cached reference, compiled body) against the naive definitions."""

import pytest
import torch
import torch.nn.functional as F

from alignkit.data.schema import TokenizedExample
from alignkit.engine import SequenceScorer, collate, sequence_logps
from alignkit.engine import head as head_mod
from alignkit.engine.layout import packed_layout, padded_layout
from alignkit.losses import RankedBatch, get_loss
from alignkit.models.reference import CachedReference, FrozenReference
from alignkit.train.preference import PreferenceMethod

VOCAB, PAD, BETA = 97, 0, 0.1


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=PAD, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def naive_logps(model, prompt, response):
    """log p(response | prompt) per token from full logits (as in test_logprobs.py)."""
    logp = torch.log_softmax(model(torch.tensor([prompt + response])).logits.float(), dim=-1)[0]  # [T, V]
    return logp[torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1), torch.tensor(response)]


def random_batch(seed=0):
    return collate(pairwise_examples(seed, n=4, k=None))


def naive_head(hidden, weight, bias, targets):
    return F.log_softmax(F.linear(hidden, weight, bias).float(), -1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("keep_bytes", [0, 2**30], ids=["recompute", "keep-softmax"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_head_values_and_grads_equal_full_log_softmax(monkeypatch, keep_bytes, with_bias):
    monkeypatch.setattr(head_mod, "KEEP_PROBS_BYTES", keep_bytes)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 8, generator=g, requires_grad=True)
    head = torch.nn.Linear(8, 13, bias=with_bias)
    targets = torch.randint(0, 13, (11,), generator=g)
    weights = torch.randn(11, generator=g)
    out = head_mod.target_logprobs(hidden, head, targets, chunk_size=4)  # 3 chunks, the last short
    (out * weights).sum().backward()
    grads = [hidden.grad, head.weight.grad] + ([head.bias.grad] if with_bias else [])
    for p in [hidden, *head.parameters()]:
        p.grad = None
    ref = naive_head(hidden, head.weight, head.bias, targets)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    expected = [hidden.grad, head.weight.grad] + ([head.bias.grad] if with_bias else [])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_head_keeps_no_softmax_without_grad():
    head = torch.nn.Linear(8, 13)
    with torch.no_grad():
        out = head_mod.target_logprobs(torch.randn(5, 8), head, torch.zeros(5, dtype=torch.long), 2)
    assert out.shape == (5,) and not out.requires_grad


@pytest.mark.parametrize("make", ["packed", "padded-left", "padded-right"])
def test_vectorised_layouts_point_each_target_at_its_predecessor(make):
    batch = random_batch(seed=11)
    P, R, W = batch.prompt_ids, batch.response_ids, batch.max_responses
    if make == "packed":
        layout = packed_layout(P, R, W, PAD, row_capacity=64)  # several prompt groups per row
    else:
        layout = padded_layout(P, R, W, PAD, side=make.split("-")[1])
    records = list(zip(*(t.tolist() for t in (layout.pred_rows, layout.pred_cols, layout.targets,
                                               layout.flat_index, layout.token_index))))
    assert sorted((flat, j) for _, _, _, flat, j in records) == sorted(
        (b * W + k, j) for b, rs in enumerate(R) for k, resp in enumerate(rs) for j in range(len(resp)))
    for r, c, target, flat, j in records:
        b, k = divmod(flat, W)
        assert target == R[b][k][j]
        # the predicting position holds the previous token (the prompt's last one for j = 0) at its position id
        assert int(layout.input_ids[r, c]) == (P[b][-1] if j == 0 else R[b][k][j - 1])
        assert int(layout.position_ids[r, c]) == len(P[b]) - 1 + j


def test_multi_group_packed_rows_equal_naive():
    model = tiny_llama()
    batch = random_batch(seed=2)
    scorer = SequenceScorer(model, chunk_size=4)
    from alignkit.engine import logprobs

    original = logprobs.packed_layout
    try:  # one row for all prompts: groups must not see each other
        logprobs.packed_layout = lambda *a, **k: original(*a, row_capacity=10_000, **k)
        out = sequence_logps(scorer, batch, pad_id=PAD)
    finally:
        logprobs.packed_layout = original
    for b, (prompt, responses) in enumerate(zip(batch.prompt_ids, batch.response_ids)):
        for k, resp in enumerate(responses):
            torch.testing.assert_close(out.logps[b, k], naive_logps(model, prompt, resp).sum(), atol=1e-5, rtol=0)


def test_lm_head_module_never_runs_over_all_positions():
    model = tiny_llama()
    calls = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    sequence_logps(SequenceScorer(model), random_batch(), pad_id=PAD)
    assert calls == []  # the head's weight is used on response rows only, never its full forward


def pairwise_examples(seed=0, n=4, k=2):
    """``n`` random prompts with ``k`` responses each (``k=None``: 1, 2, 3, 4, ... by row)."""
    g = torch.Generator().manual_seed(seed)

    def rand(lo, hi):
        return torch.randint(1, VOCAB, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    out = []
    for b in range(n):
        kb = k or b % 4 + 1
        out.append(TokenizedExample(rand(2, 9), [rand(1, 7) for _ in range(kb)], scores=[float(kb - j) for j in range(kb)]))
    return out


@torch.no_grad()
def naive_table(model, examples):
    return torch.tensor([[float(naive_logps(model, ex.prompt_ids, r).sum()) for r in ex.response_ids]
                         for ex in examples])


def test_dpo_loss_with_cached_reference_equals_naive():
    """L = -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l))) with naive full-logits log-probs."""
    policy, ref_model = tiny_llama(0), tiny_llama(1)
    examples = pairwise_examples()
    cached = CachedReference.build(FrozenReference(ref_model, PAD), examples, 3, None, progress=False)
    method = PreferenceMethod("dpo", {"beta": BETA}, PAD, cached)
    loss, metrics = method.loss(SequenceScorer(policy, chunk_size=3), examples)
    pi, ref = naive_table(policy, examples), naive_table(ref_model, examples)
    expected = -F.logsigmoid(BETA * ((pi[:, 0] - ref[:, 0]) - (pi[:, 1] - ref[:, 1])))
    torch.testing.assert_close(loss, expected.sum(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(metrics["loss"]), expected.mean(), atol=1e-5, rtol=0)


def test_listwise_k4_loss_and_grads_equal_naive():
    policy, naive_policy, ref_model = tiny_llama(0), tiny_llama(0), tiny_llama(1)
    examples = pairwise_examples(seed=4, n=3, k=4)
    cached = CachedReference.build(FrozenReference(ref_model, PAD), examples, 2, None, progress=False)
    method = PreferenceMethod("listwise_dpo", {"beta": BETA}, PAD, cached)
    loss, _ = method.loss(SequenceScorer(policy, chunk_size=5), examples)
    loss.backward()
    batch = collate(examples)
    pi = torch.stack([torch.stack([naive_logps(naive_policy, ex.prompt_ids, r).sum() for r in ex.response_ids])
                      for ex in examples])
    ranked = RankedBatch(pi, naive_table(ref_model, examples), batch.response_lengths(), batch.scores, batch.mask)
    expected, _ = get_loss("listwise_dpo")(ranked, beta=BETA)
    expected.sum().backward()
    torch.testing.assert_close(loss, expected.sum(), atol=1e-5, rtol=0)
    for (name, a), (_, b) in zip(policy.named_parameters(), naive_policy.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_compiled_scorer_equals_eager_and_keeps_state_dict():
    model = tiny_llama()
    eager = SequenceScorer(model)
    compiled = SequenceScorer(model, compile="eager")  # dynamo tracing without a C++ toolchain: fast
    batch = random_batch(seed=9)
    a = sequence_logps(eager, batch, pad_id=PAD).logps
    b = sequence_logps(compiled, batch, pad_id=PAD).logps
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert list(compiled.state_dict()) == list(eager.state_dict())
