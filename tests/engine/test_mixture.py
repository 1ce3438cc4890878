"""The geometric-mixture sampler of Nash-MD: the mixed distribution by hand, its two ends (m = 0 is the
policy, m = 1 the reference, token for token under greedy decoding), seeding, and the K samples per prompt."""

import copy
import math

import pytest
import torch

from alignkit.engine.generation import SamplingConfig, sample
from alignkit.engine.mixture import mixture_logprobs, sample_mixture
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer


@pytest.fixture(scope="module")
def pair():
    tok = build_tiny_tokenizer()
    policy = build_tiny_model(tok)
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    return policy, reference, tok


def prompts(tok):
    return [tok(t)["input_ids"] for t in ("The movie was", "Hello", "The food at this restaurant was")]


def test_mixture_logprobs_by_hand():
    """pi = (1/2, 1/2), pi_ref = (1/5, 4/5), m = 1/2: pi_mix ∝ (sqrt(1/10), sqrt(4/10)) = (1/3, 2/3) after
    normalising; raw logits give the same (log-softmax only shifts a row)."""
    policy, reference = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.2, 0.8]])) + 3.0
    out = mixture_logprobs(policy, reference, 0.5).exp()
    assert torch.allclose(out, torch.tensor([[1 / 3, 2 / 3]]))
    assert torch.allclose(mixture_logprobs(policy, reference, 0.0).exp(), torch.tensor([[0.5, 0.5]]))
    assert math.isclose(float(mixture_logprobs(policy, reference, 1.0).exp()[0, 1]), 0.8, rel_tol=1e-6)


@pytest.mark.parametrize("coef,which", [(0.0, 0), (1.0, 1)])
def test_greedy_mixture_ends_are_the_models_themselves(pair, coef, which):
    policy, reference, tok = pair
    cfg = SamplingConfig(num_samples=2, max_new_tokens=10, temperature=0, batch_size=2)
    mixed = sample_mixture(policy, reference, tok, prompts(tok), cfg, coef)
    alone = sample((policy, reference)[which], tok, prompts(tok), cfg)
    assert mixed.response_ids == alone.response_ids and mixed.texts == alone.texts


def test_seeded_k_samples_per_prompt_within_budget(pair):
    policy, reference, tok = pair
    cfg = SamplingConfig(num_samples=3, max_new_tokens=6, seed=4, batch_size=2)
    a, b = (sample_mixture(policy, reference, tok, prompts(tok), cfg, 0.5) for _ in range(2))
    c = sample_mixture(policy, reference, tok, prompts(tok), SamplingConfig(num_samples=3, max_new_tokens=6, seed=5), 0.5)
    assert a.response_ids == b.response_ids and a.response_ids != c.response_ids
    assert [len(r) for r in a.response_ids] == [3, 3, 3]
    assert all(0 < len(r) <= 6 for rs in a.response_ids for r in rs)


def test_the_mixture_source_draws_from_its_own_seed_stream(pair):
    """The sampler the loop's `mixture` source uses is sample_mixture at seed + SEED_OFFSET: at m = 0 and the
    policy's own seed it would repeat the policy's samples exactly."""
    from alignkit.engine.mixture import SEED_OFFSET, mixture_sampler

    policy, reference, tok = pair
    cfg = SamplingConfig(num_samples=2, max_new_tokens=6, seed=3)
    got = mixture_sampler(reference, 0.5)(policy, tok, prompts(tok), cfg)
    shifted = SamplingConfig(num_samples=2, max_new_tokens=6, seed=3 + SEED_OFFSET)
    assert got.response_ids == sample_mixture(policy, reference, tok, prompts(tok), shifted, 0.5).response_ids
