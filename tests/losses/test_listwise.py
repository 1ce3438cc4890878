"""Ranking losses: Plackett-Luce by explicit sums, K=2 identities, ties, masks, random shapes."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid, loop_plackett_luce
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import LOSSES
from alignkit.losses.listwise import listwise_dpo, pro, rrhf
from alignkit.losses.preference import dpo


def test_listwise_dpo_with_k2_equals_dpo_exactly():
    g = torch.Generator().manual_seed(1)
    policy, ref = (-torch.rand(16, 2, generator=g) * 20).tolist(), (-torch.rand(16, 2, generator=g) * 20).tolist()
    scores = torch.randint(0, 3, (16, 2), generator=g).float().tolist()
    b = batch(policy, ref=ref, scores=scores)
    assert torch.equal(listwise_dpo(b, beta=0.3)[0], dpo(b, beta=0.3)[0])


def test_listwise_dpo_k3_by_hand():
    # rewards beta*ratio = 0.1*[2, 0, -2] = [0.2, 0, -0.2] ranked best..worst
    # L = -[0.2 - log(e^.2 + e^0 + e^-.2)] - [0 - log(e^0 + e^-.2)]
    b = batch([[-1.0, -2.0, -3.0]], ref=[[-3.0, -2.0, -1.0]])
    expected = -(0.2 - math.log(math.exp(0.2) + 1 + math.exp(-0.2))) - (0 - math.log(1 + math.exp(-0.2)))
    assert listwise_dpo(b, beta=0.1)[0].item() == pytest.approx(expected, abs=1e-6)


def test_pro_k2_is_its_pairwise_form():
    # s = logp/len = [-1, -3]; L = -log sigma(-1 - (-3)) + beta * NLL(best) = -log sigma(2) + 0.05 * 1
    b = batch([[-4.0, -9.0]], lengths=[[4.0, 3.0]])
    assert pro(b, beta=0.05)[0].item() == pytest.approx(-log_sigmoid(2.0) + 0.05, abs=1e-6)


def test_rrhf_k2_is_its_pairwise_hinge_and_uses_every_pair():
    # K=2, worse response has the higher mean log-prob: p = [-2, -1] -> hinge 1, plus NLL(best) 2
    b = batch([[-4.0, -3.0]], lengths=[[2.0, 3.0]])
    assert rrhf(b, lam=1.0)[0].item() == pytest.approx(1.0 + 2.0)
    # K=3 ranked [a > b > c] with p = [-3, -2, -1]: violations (b over a) 1, (c over a) 2, (c over b) 1
    # -> 4 (the authors' first-row-only code would count only 3); plus NLL(a) = 3
    b = batch([[-3.0, -2.0, -1.0]])
    assert rrhf(b, lam=1.0)[0].item() == pytest.approx(4.0 + 3.0)


def test_ties_do_not_compete():
    # responses 0 and 1 tied at the top, both above 2: each competes only with 2
    b = batch([[-1.0, -2.0, -3.0]], ref=[[-2.0, -2.0, -2.0]], scores=[[1.0, 1.0, 0.0]])
    r = [0.1, 0.0, -0.1]
    expected = -log_sigmoid(r[0] - r[2]) - log_sigmoid(r[1] - r[2])
    assert listwise_dpo(b, beta=0.1)[0].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["listwise_dpo", "pro", "rrhf"])
def test_gradient_signs_and_masking(name):
    nan = float("nan")
    b = batch([[-6.0, -7.0, -8.0, nan]], ref=[[-7.0, -7.0, -7.0, nan]], lengths=[[3.0, 3.0, 3.0, 9.0]],
              mask=[[True, True, True, False]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    grad = b.policy_logps.grad[0]
    assert grad[0] < 0 and grad[2] >= 0 and grad[3] == 0
    assert torch.isfinite(losses).all()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 4),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(["listwise_dpo", "pro", "dpo", "rrhf", "simpo", "kwise", "bradley_terry", "ipo", "kto"]),
)
def test_random_shapes_agree_with_loops_and_stay_finite(rows, k, seed, name):
    g = torch.Generator().manual_seed(seed)
    policy = -torch.rand(rows, k, generator=g) * 30
    ref = -torch.rand(rows, k, generator=g) * 30
    scores = torch.randint(0, 3, (rows, k), generator=g).float()
    mask = torch.rand(rows, k, generator=g) > 0.25
    mask[0] = False  # an all-masked row must give 0
    b = batch(policy.tolist(), ref=ref.tolist(), scores=scores.tolist(), mask=mask.tolist(), grad=True)
    losses, _ = LOSSES[name](b)
    assert losses.shape == (rows,) and torch.isfinite(losses).all() and losses[0] == 0
    losses.sum().backward()
    assert torch.isfinite(b.policy_logps.grad).all() and (b.policy_logps.grad[~mask] == 0).all()
    if name == "listwise_dpo":
        for r in range(rows):
            values = (0.1 * (policy[r] - ref[r])).tolist()
            expected = loop_plackett_luce(values, scores[r].tolist(), mask[r].tolist())
            assert losses[r].item() == pytest.approx(expected, abs=1e-4)
