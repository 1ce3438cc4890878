"""PreferenceMethod: what the trainer adds to a loss (here: KTO's mismatched pairs)."""

import pytest
import torch

from alignkit.data.schema import TokenizedExample
from alignkit.engine import SequenceScorer, collate, sequence_logps
from alignkit.models.reference import CachedReference, FrozenReference, copy_of
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.train.preference import PreferenceMethod


@pytest.fixture(scope="module")
def kto_setup():
    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    policy = build_tiny_model(tok)
    reference_model = copy_of(policy)
    with torch.no_grad():  # a reference that differs, so that log-ratios are not all 0
        for p in reference_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference = FrozenReference(reference_model, tok.pad_token_id)
    rows = [TokenizedExample(tok.encode(f"prompt {i}"), [tok.encode(f" answer {i}" * (i + 1))],
                             scores=[1.0], desirable=[i % 2 == 0], source=f"f:{i}") for i in range(3)]
    method = PreferenceMethod("kto", {}, tok.pad_token_id, reference)
    return method, SequenceScorer(policy), reference, rows, tok.pad_token_id


def log_ratio(scorer, reference, prompt, response, pad_id):
    batch = collate([TokenizedExample(prompt, [response])])
    with torch.no_grad():
        return float(sequence_logps(scorer, batch, pad_id=pad_id).logps[0, 0] - reference.logps(batch)[0, 0])


def test_kto_gets_log_ratios_of_each_prompt_with_the_previous_rows_response(kto_setup):
    method, scorer, reference, rows, pad_id = kto_setup
    got = method.mismatched_log_ratios(scorer, rows)
    # row 0 takes row 2's response, row 1 row 0's, row 2 row 1's
    want = [log_ratio(scorer, reference, rows[i].prompt_ids, rows[j].response_ids[0], pad_id)
            for i, j in ((0, 2), (1, 0), (2, 1))]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-5, rtol=0)
    matched = [log_ratio(scorer, reference, r.prompt_ids, r.response_ids[0], pad_id) for r in rows]
    assert not torch.allclose(got, torch.tensor(matched), atol=1e-3)
    # and the loss sees them: its kl metric is their mean, clamped at 0
    _, metrics = method.loss(scorer, rows)
    assert metrics["kl"] == pytest.approx(max(0.0, sum(want) / 3), abs=1e-5)


def test_a_precomputed_reference_keeps_the_batch_estimate(kto_setup):
    _, _, _, _, pad_id = kto_setup
    method = PreferenceMethod("kto", {}, pad_id, CachedReference({}))
    assert method.mismatched is False
    assert PreferenceMethod("dpo", {}, pad_id, CachedReference({})).mismatched is False
