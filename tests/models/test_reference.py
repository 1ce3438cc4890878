"""The precomputed reference scores only what it lacks, keeps it on disk as it goes, and reuses it."""

import pytest
import torch

from alignkit.data.schema import TokenizedExample
from alignkit.models.reference import CachedReference, read_parts, reference_fingerprint, sequence_key
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer


class CountingSource:
    """log-prob of a response = -(sum of its ids); counts the responses it scores; fails on demand."""

    def __init__(self, fail_after: int | None = None):
        self.scored, self.fail_after = 0, fail_after

    def logps(self, batch):
        if self.fail_after is not None and self.scored >= self.fail_after:
            raise RuntimeError("interrupted")
        out = torch.zeros(batch.mask.shape)
        for b, responses in enumerate(batch.response_ids):
            for k, r in enumerate(responses):
                out[b, k] = -float(sum(r))
                self.scored += 1
        return out


def examples(n):
    return [TokenizedExample([1, i], [[i, 2], [i + 100, 3]], scores=[1.0, 0.0]) for i in range(n)]


def test_only_missing_pairs_are_scored_and_reused_across_builds(tmp_path):
    first = CountingSource()
    CachedReference.build(first, examples(3), 2, tmp_path, progress=False)
    assert first.scored == 6 and len(read_parts(tmp_path)) == 6
    second = CountingSource()
    ref = CachedReference.build(second, examples(5), 2, tmp_path, progress=False)
    assert second.scored == 4  # examples 3 and 4 only
    for ex in examples(5):
        for r in ex.response_ids:
            assert ref.table[sequence_key(ex.prompt_ids, r)] == -float(sum(r))
    third = CountingSource()
    CachedReference.build(third, examples(5), 2, tmp_path, progress=False)
    assert third.scored == 0


def test_an_interrupted_build_keeps_what_it_flushed(tmp_path):
    with pytest.raises(RuntimeError, match="interrupted"):  # one batch (2 examples, 4 pairs) per flush
        CachedReference.build(CountingSource(fail_after=8), examples(6), 2, tmp_path, progress=False, flush_every=1)
    assert len(read_parts(tmp_path)) == 8
    assert not list(tmp_path.glob(".*tmp"))  # no half-written part
    rest = CountingSource()
    CachedReference.build(rest, examples(6), 2, tmp_path, progress=False)
    assert rest.scored == 4


def test_fingerprint_follows_weights_and_settings_not_lora():
    from peft import LoraConfig, get_peft_model

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_model(tok)
    key = reference_fingerprint(model, {"share_prompt": True})
    assert key != reference_fingerprint(model, {"share_prompt": False})
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    base = reference_fingerprint(lora, {"share_prompt": True})
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_A" in n).add_(1.0)
    assert reference_fingerprint(lora, {"share_prompt": True}) == base  # the adapter is not the reference
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_" not in n).add_(1.0)
    assert reference_fingerprint(lora, {"share_prompt": True}) != base


def test_initial_policy_reference_equals_a_frozen_copy_and_leaves_the_policy_trainable():
    from alignkit.engine import SequenceScorer
    from alignkit.engine.batch import collate
    from alignkit.models.reference import FrozenReference, InitialPolicyReference, copy_of

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    policy = SequenceScorer(build_tiny_model(tok)).train()
    batch = collate([TokenizedExample([0, 5, 6], [[7, 8, 1], [9, 1]], scores=[1.0, 0.0])])
    frozen = FrozenReference(copy_of(policy.lm), tok.pad_token_id).logps(batch)
    initial = InitialPolicyReference(policy, tok.pad_token_id).logps(batch)
    torch.testing.assert_close(initial, frozen, atol=1e-6, rtol=0)
    assert policy.training and all(p.requires_grad for p in policy.parameters())
