"""Pairwise losses: hand-computed values, identities, gradient signs, masking, extremes."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid, loop_pairwise

from alignkit.losses import LOSSES
from alignkit.losses.preference import cpo, dpo, ipo, kto, orpo, r_dpo, simpo, slic_hf


def test_dpo_by_hand():
    # chosen: log pi = -1, log ref = -2 -> ratio +1; rejected: -3 vs -2 -> ratio -1.
    # h = beta * (1 - (-1)) = 0.1 * 2 = 0.2; loss = -log sigma(0.2) = log(1 + e^-0.2) = 0.598139...
    losses, metrics = dpo(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]), beta=0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margin"].item() == pytest.approx(0.2)
    assert metrics["rewards/accuracy"].item() == 1.0


def test_label_smoothing():
    b = batch([[-1.0, -3.0], [-2.0, -1.0]], ref=[[-2.0, -2.0], [-2.0, -2.0]])
    assert torch.equal(dpo(b, beta=0.1, label_smoothing=0.0)[0], dpo(b, beta=0.1)[0])
    # eps = 0.25 on h = 0.2: 0.75 * log(1+e^-0.2) + 0.25 * log(1+e^0.2)
    expected = 0.75 * math.log1p(math.exp(-0.2)) + 0.25 * math.log1p(math.exp(0.2))
    assert dpo(b, beta=0.1, label_smoothing=0.25)[0][0].item() == pytest.approx(expected, abs=1e-6)


def test_ipo_by_hand():
    # ratios +1 and -1 -> h = 2; tau = 0.1 -> target 1/(2*0.1) = 5; loss = (2 - 5)^2 = 9
    assert ipo(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]), beta=0.1)[0].item() == pytest.approx(9.0)


def test_r_dpo_length_penalty():
    # h = 0.2 - alpha * (|y_w| - |y_l|) = 0.2 - 0.05 * (10 - 4) = -0.1
    b = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]], lengths=[[10.0, 4.0]])
    assert r_dpo(b, beta=0.1, alpha=0.05)[0].item() == pytest.approx(-log_sigmoid(-0.1), abs=1e-6)
    assert torch.equal(r_dpo(b, beta=0.1, alpha=0.0)[0], dpo(b, beta=0.1)[0])


def test_simpo_by_hand():
    # beta/|y|: 2 * (-4/4) = -2 ; 2 * (-9/3) = -6 ; h = -2 - (-6) - gamma(1) = 3
    b = batch([[-4.0, -9.0]], lengths=[[4.0, 3.0]])
    assert simpo(b, beta=2.0, gamma=1.0)[0].item() == pytest.approx(-log_sigmoid(3.0), abs=1e-6)


def test_cpo_and_orpo_by_hand():
    b = batch([[-4.0, -9.0]], lengths=[[4.0, 3.0]])
    # cpo: -log sigma(0.1 * (-4 + 9)) + NLL_mean(chosen) = -log sigma(0.5) + 4/4
    assert cpo(b, beta=0.1)[0].item() == pytest.approx(-log_sigmoid(0.5) + 1.0, abs=1e-6)
    # orpo: mean logps -1 and -3; log odds = lp - log(1 - e^lp)
    lo_w = -1 - math.log(1 - math.exp(-1))
    lo_l = -3 - math.log(1 - math.exp(-3))
    expected = 1.0 + 0.1 * -log_sigmoid(lo_w - lo_l)
    assert orpo(b, lam=0.1)[0].item() == pytest.approx(expected, abs=1e-5)


def test_slic_hf_by_hand():
    # hinge max(0, 1 - (-4) + (-9)) = max(0, -4) = 0 -> only 0.1 * NLL(best) = 0.1 * 4/4
    b = batch([[-4.0, -9.0]], lengths=[[4.0, 3.0]])
    assert slic_hf(b, delta=1.0, lam=0.1)[0].item() == pytest.approx(0.1)
    # reversed preference: hinge 1 - (-9) + (-4) = 6, NLL(best = -9 over 3 tokens) = 3
    b = batch([[-4.0, -9.0]], lengths=[[4.0, 3.0]], scores=[[0.0, 1.0]])
    assert slic_hf(b, delta=1.0, lam=0.1)[0].item() == pytest.approx(6.0 + 0.3)


def test_kto_by_hand():
    # ratios: +1 (desirable), -1 (undesirable); z0 = max(0, mean(1, -1)) = 0
    # loss = (1 - sigma(0.1*1)) + (1 - sigma(0.1*(0 - (-1)))) = 2 * (1 - sigma(0.1))
    b = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]])
    sig = 1 / (1 + math.exp(-0.1))
    assert kto(b, beta=0.1)[0].item() == pytest.approx(2 * (1 - sig), abs=1e-6)
    # unpaired: one desirable response per row, with z0 = max(0, (0.5 + 1.5) / 2) = 1
    b = batch([[-1.5], [-0.5]], ref=[[-2.0], [-2.0]], desirable=[[True], [False]], scores=[[1.0], [0.0]])
    losses, metrics = kto(b, beta=0.1)
    assert metrics["kl"].item() == pytest.approx(1.0)
    assert losses[0].item() == pytest.approx(1 - 1 / (1 + math.exp(-0.1 * (0.5 - 1))), abs=1e-6)
    assert losses[1].item() == pytest.approx(1 - 1 / (1 + math.exp(-0.1 * (1 - 1.5))), abs=1e-6)


@pytest.mark.parametrize("name", ["dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "kto"])
def test_gradient_raises_better_and_lowers_worse(name):
    b = batch([[-6.0, -6.5, -7.0]], ref=[[-6.0, -6.0, -6.0]], lengths=[[3.0, 3.0, 3.0]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    grad = b.policy_logps.grad[0]
    assert grad[0] < 0, "loss must fall when the best response's log-prob rises"
    assert grad[2] > 0 or name in ("cpo", "orpo", "slic_hf") and grad[2] >= 0


@pytest.mark.parametrize("name", ["dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "kto"])
def test_masked_and_tied_have_zero_gradient_and_loss(name):
    nan = float("nan")
    b = batch([[-5.0, -6.0, nan], [-5.0, -6.0, -7.0]], ref=[[-5.5, -5.5, nan], [-5.5, -5.5, -5.5]],
              scores=[[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]], mask=[[True, True, False], [True, True, True]],
              lengths=[[2.0, 2.0, 1.0], [2.0, 2.0, 2.0]], grad=True)
    losses, metrics = LOSSES[name](b)
    assert torch.isfinite(losses).all() and losses[1] == 0
    losses.sum().backward()
    assert b.policy_logps.grad[0, 2] == 0 and (b.policy_logps.grad[1] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())


@pytest.mark.parametrize("name", ["dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "kto"])
def test_finite_at_extreme_margins(name):
    b = batch([[-1e-3, -1e4], [-1e4, -1e-3]], ref=[[-1e4, -1e-3], [-1e-3, -1e4]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(b.policy_logps.grad).all()


def test_pairwise_losses_average_every_pair_of_a_ranking():
    g = torch.Generator().manual_seed(0)
    policy, ref = -torch.rand(3, 4, generator=g) * 10, -torch.rand(3, 4, generator=g) * 10
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    b = batch(policy.tolist(), ref=ref.tolist(), scores=scores.tolist())
    expected = loop_pairwise(b, lambda r, i, j: -log_sigmoid(
        0.1 * ((policy[r, i] - ref[r, i]) - (policy[r, j] - ref[r, j])).item()))
    torch.testing.assert_close(dpo(b)[0], expected, atol=1e-5, rtol=0)
