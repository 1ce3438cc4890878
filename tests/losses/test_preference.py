"""Pairwise losses: values worked out by hand, a loop re-implementation, identities,
gradient signs, masking and ties, extremes, and random shapes (hypothesis)."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid, strict_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import LOSSES, RankedBatch
from alignkit.losses.common import log1mexp
from alignkit.losses.preference import cpo, dpo, ipo, kto, orpo, r_dpo, simpo, slic_hf

# every registered pairwise loss gets the shared contract tests below (gradient signs, masks, extremes,
# dtypes, random shapes); the loop-agreement test needs a hand-written loop per loss
PAIRWISE = sorted(n for n, fn in LOSSES.items() if fn.trains == "policy" and fn.data in ("pairs", "unpaired"))
WITH_A_LOOP = ["dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "kto"]
NAN = float("nan")


def sigmoid(x):
    return math.exp(log_sigmoid(x))


# ---------------------------------------------------------------- by hand


def test_dpo_by_hand():
    """chosen: log pi = -1, log ref = -2 -> ratio +1; rejected: -3 vs -2 -> ratio -1.
    h = beta * (1 - (-1)) = 0.1 * 2 = 0.2; loss = -log sigma(0.2) = log(1 + e^-0.2) = 0.598139."""
    losses, metrics = dpo(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]), beta=0.1)
    assert losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))), abs=1e-6)
    assert losses.item() == pytest.approx(0.598139, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margin"].item() == pytest.approx(0.2)
    assert metrics["rewards/accuracy"].item() == 1.0
    assert metrics["logps/chosen"].item() == -1.0 and metrics["logps/rejected"].item() == -3.0


def test_dpo_with_a_log_3_margin():
    """beta = 1, ratios [ln 3, 0]: sigma(ln 3) = 3 / (3 + 1) = 3/4, loss = ln(4/3); reversed: ln 4."""
    b = batch([[math.log(3.0), 0.0]], ref=[[0.0, 0.0]])
    assert dpo(b, beta=1.0)[0].item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    b = batch([[math.log(3.0), 0.0]], ref=[[0.0, 0.0]], scores=[[0.0, 1.0]])
    assert dpo(b, beta=1.0)[0].item() == pytest.approx(math.log(4.0), abs=1e-6)


def test_label_smoothing():
    b = batch([[-1.0, -3.0], [-2.0, -1.0]], ref=[[-2.0, -2.0], [-2.0, -2.0]])
    assert torch.equal(dpo(b, beta=0.1, label_smoothing=0.0)[0], dpo(b, beta=0.1)[0])
    # eps = 0.25 on h = 0.2: 0.75 * log(1 + e^-0.2) + 0.25 * log(1 + e^0.2) = 0.448604 + 0.199350
    expected = 0.75 * math.log1p(math.exp(-0.2)) + 0.25 * math.log1p(math.exp(0.2))
    assert dpo(b, beta=0.1, label_smoothing=0.25)[0][0].item() == pytest.approx(expected, abs=1e-6)
    # eps = 0.5 is symmetric in h: the loss no longer depends on which response won
    flipped = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]], scores=[[0.0, 1.0]])
    assert dpo(flipped, label_smoothing=0.5)[0].item() == pytest.approx(dpo(b, label_smoothing=0.5)[0][0].item())


def test_ipo_by_hand():
    # ratios +1 and -1 -> h = 2; tau = 0.1 -> target 1/(2*0.1) = 5; loss = (2 - 5)^2 = 9
    assert ipo(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]), beta=0.1)[0].item() == pytest.approx(9.0)
    # tau = 0.25 -> target 2 = h: loss 0 (IPO stops at the target margin, unlike DPO)
    assert ipo(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]), beta=0.25)[0].item() == 0.0


def test_r_dpo_by_hand():
    """beta h = 0.1 * 2 = 0.2; lengths 30 and 10: alpha (|y_w| - |y_l|) = 0.01 * 20 = 0.2.
    Paper's eq. 9: z = 0.2 + 0.2 = 0.4, loss = log(1 + e^-0.4) = 0.513015."""
    b = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]], lengths=[[30.0, 10.0]])
    assert r_dpo(b, beta=0.1, alpha=0.01)[0].item() == pytest.approx(math.log1p(math.exp(-0.4)), abs=1e-6)
    assert torch.equal(r_dpo(b, beta=0.1, alpha=0.0)[0], dpo(b, beta=0.1)[0])
    # a longer chosen response explains part of the preference: less loss than DPO, and
    # less push on the log-ratio; a longer rejected one: more
    assert r_dpo(b)[0].item() < dpo(b)[0].item()
    shorter = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]], lengths=[[10.0, 30.0]])
    assert r_dpo(shorter)[0].item() > dpo(shorter)[0].item()


def test_simpo_by_hand():
    """Defaults beta = 2, gamma = 0.5. Mean log-probs -10/10 = -1 and -30/20 = -1.5:
    h = 2 * (-1 - (-1.5)) - 0.5 = 0.5, loss = log(1 + e^-0.5) = 0.474077."""
    b = batch([[-10.0, -30.0]], lengths=[[10.0, 20.0]])
    losses, metrics = simpo(b)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    assert metrics["rewards/chosen"].item() == -1.0 and metrics["rewards/rejected"].item() == -1.5
    # summed log-probs favour the rejected response (-15 > -20) but its per-token mean is
    # lower (-1.5 < -1): SimPO sees only the means, h = 2 * 0.5 - 0.5 as above
    assert simpo(batch([[-20.0, -15.0]], lengths=[[20.0, 10.0]]))[0].item() == pytest.approx(
        math.log1p(math.exp(-(2 * 0.5 - 0.5))), abs=1e-6)


def test_cpo_by_hand():
    # -log sigma(0.1 * (-10 - (-20))) = log(1 + e^-1) = 0.313262; NLL(chosen) = 10 / 5 = 2
    b = batch([[-10.0, -20.0]], lengths=[[5.0, 5.0]])
    assert cpo(b)[0].item() == pytest.approx(math.log1p(math.exp(-1.0)) + 2.0, abs=1e-6)
    assert cpo(b, nll_weight=0.0)[0].item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)


def test_orpo_by_hand():
    """chosen: 2 tokens at p = 1/2 -> mean log p = ln(1/2), odds 1, log odds 0, NLL ln 2.
    rejected: 4 tokens at p = 1/5 -> odds (1/5)/(4/5) = 1/4, log odds -ln 4.
    -log sigma(0 - (-ln 4)) = -log(4/5) = ln 1.25; loss = ln 2 + 0.1 * ln 1.25 = 0.715461."""
    b = batch([[2 * math.log(0.5), 4 * math.log(0.2)]], lengths=[[2.0, 4.0]])
    assert orpo(b, lam=0.1)[0].item() == pytest.approx(math.log(2) + 0.1 * math.log(1.25), abs=1e-6)


def test_orpo_log_odds_is_safe_near_probability_one():
    # mean log p = -1e-9 (p ~ 1 - 1e-9) would give log(1 - p) = log(1e-9): capped at odds ~1e6
    b = batch([[-1e-9, -5.0]], lengths=[[1.0, 1.0]], grad=True)
    losses, _ = orpo(b)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(b.policy_logps.grad).all()


def test_orpo_log1mexp_is_accurate_at_both_ends():
    # log(1 - e^x) in float32: log1p(-e^x) cancels near x = 0 and log(-expm1 x) rounds to 0
    # far from it; the switch at -log 2 keeps a relative error near fp32 precision at both ends
    def check(xs, rtol):
        expected = torch.tensor([math.log(-math.expm1(x)) for x in xs], dtype=torch.float64)
        torch.testing.assert_close(log1mexp(torch.tensor(xs)).double(), expected, rtol=rtol, atol=0)

    check([-1e-5, -1e-3, -0.5], rtol=1e-6)  # the log1p form would be off by ~5e-4 at -1e-5
    check([-0.7, -1.0, -5.0, -30.0], rtol=1e-3)  # the expm1 form would give 0 at -30
    assert torch.isfinite(log1mexp(torch.tensor([0.0, 1.0]))).all()  # clamped below 0: never -inf


def test_slic_hf_by_hand():
    # hinge max(0, 1 - (-5) + (-5.5)) = 0.5; NLL(best) = 5 / 5 = 1 -> 0.5 + 0.1 * 1 = 0.6
    b = batch([[-5.0, -5.5]], lengths=[[5.0, 11.0]])
    assert slic_hf(b)[0].item() == pytest.approx(0.6)
    # margin 2 > delta: hinge 0, only the regulariser 0.1 * 1 remains
    assert slic_hf(batch([[-5.0, -7.0]], lengths=[[5.0, 7.0]]))[0].item() == pytest.approx(0.1)
    # reversed preference: hinge 1 - (-5.5) + (-5) = 1.5, NLL(best = -5.5 over 11) = 0.5
    b = batch([[-5.0, -5.5]], lengths=[[5.0, 11.0]], scores=[[0.0, 1.0]])
    assert slic_hf(b)[0].item() == pytest.approx(1.5 + 0.05)


def test_kto_by_hand():
    # ratios: +1 (desirable), -1 (undesirable); z0 = max(0, mean(1, -1)) = 0
    # loss = (1 - sigma(0.1*1)) + (1 - sigma(0.1*(0 - (-1)))) = 2 * (1 - sigma(0.1)) = 0.950042
    sig = 1 / (1 + math.exp(-0.1))
    assert kto(batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]]))[0].item() == pytest.approx(2 * (1 - sig), abs=1e-6)
    # ratios [3, 1]: z0 = 2; desirable 1 - sigma(0.1*(3-2)), undesirable 1 - sigma(0.1*(2-1))
    losses, metrics = kto(batch([[1.0, -1.0]], ref=[[-2.0, -2.0]]))
    assert losses.item() == pytest.approx(2 * (1 - sig), abs=1e-6) and metrics["kl"].item() == 2.0
    # negative mean ratio: z0 = max(0, -2) = 0, loss = (1 - sigma(-0.1)) + (1 - sigma(0.3))
    losses, _ = kto(batch([[-3.0, -5.0]], ref=[[-2.0, -2.0]]))
    assert losses.item() == pytest.approx(2 - 1 / (1 + math.exp(0.1)) - 1 / (1 + math.exp(-0.3)), abs=1e-6)


def test_kto_reference_point_ignores_padding():
    """Ratios [3, 1] plus a padded slot: z0 = (3 + 1) / 2 = 2 (not / 3), so the loss is the
    2 * (1 - sigma(0.1)) of the unpadded case."""
    b = batch([[1.0, -1.0, 0.0]], ref=[[-2.0, -2.0, NAN]], mask=[[True, True, False]])
    losses, metrics = kto(b)
    assert metrics["kl"].item() == 2.0
    assert losses.item() == pytest.approx(2 * (1 - sigmoid(0.1)), abs=1e-6)


def test_kto_unpaired():
    """K = 1 rows labelled by ``desirable``; z0 = max(0, (0.5 + 1.5) / 2) = 1.
    desirable r = 0.5: 1 - sigma(0.1 (0.5 - 1)); undesirable r = 1.5: 1 - sigma(0.1 (1 - 1.5))."""
    b = batch([[-1.5], [-0.5]], ref=[[-2.0], [-2.0]], desirable=[[True], [False]], scores=[[0.0], [0.0]])
    losses, metrics = kto(b, undesirable_weight=2.0)
    assert metrics["kl"].item() == pytest.approx(1.0)
    assert losses[0].item() == pytest.approx(1 - sigmoid(0.1 * (0.5 - 1)), abs=1e-6)
    assert losses[1].item() == pytest.approx(2 * (1 - sigmoid(0.1 * (1 - 1.5))), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.05)
    assert metrics["rewards/rejected"].item() == pytest.approx(0.15)
    assert metrics["logps/chosen"].item() == -1.5 and metrics["logps/rejected"].item() == -0.5


def test_metrics_over_a_ranking():
    """dpo, beta = 1, ratios [0, 2, -1] with scores [2, 1, 0]: pairs (0,1) wrong, (0,2) right,
    (1,2) right -> accuracy 2/3; chosen = response 0 (0), rejected = response 2 (-1)."""
    losses, m = dpo(batch([[0.0, 2.0, -1.0]], ref=[[0.0, 0.0, 0.0]]), beta=1.0)
    assert m["rewards/accuracy"].item() == pytest.approx(2 / 3)
    assert m["rewards/chosen"].item() == 0.0 and m["rewards/rejected"].item() == -1.0
    assert m["rewards/margin"].item() == 1.0
    assert all(not torch.as_tensor(v).requires_grad for v in m.values())
    # padding never counts, even with a real score: a masked 4th response scored -1 (lowest)
    # and 5 (highest) leaves every metric unchanged
    for junk in (-1.0, 5.0):
        padded = batch([[0.0, 2.0, -1.0, 7.0]], ref=[[0.0, 0.0, 0.0, 0.0]], scores=[[2.0, 1.0, 0.0, junk]],
                       mask=[[True, True, True, False]])
        _, pm = dpo(padded, beta=1.0)
        assert {k: v.item() for k, v in pm.items()} == {k: v.item() for k, v in m.items()}
    # the loss averages the three pairs: (softplus(2) + softplus(-1) + softplus(-3)) / 3
    expected = (math.log1p(math.exp(2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(-3))) / 3
    assert losses.item() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- loop implementation


def reference_losses(name, b: RankedBatch, **hp):
    """The losses written out with Python floats and explicit loops over rows and pairs."""
    B, K = b.policy_logps.shape
    pol, lens, sc, mk = b.policy_logps.tolist(), b.lengths.tolist(), b.scores.tolist(), b.mask.tolist()
    ref = b.ref_logps.tolist() if b.ref_logps is not None else None
    out = []
    if name == "kto":
        return reference_kto(b, **hp)
    for r in range(B):
        pairs = strict_pairs(sc[r], mk[r])
        if not pairs:
            out.append(0.0)
            continue
        valid = [i for i in range(K) if mk[r][i]]
        best = max(valid, key=lambda i: (sc[r][i], -i))  # first of the top-scored
        nll = -pol[r][best] / lens[r][best]
        ratio = {i: pol[r][i] - ref[r][i] for i in valid} if ref else None
        mean = {i: pol[r][i] / lens[r][i] for i in valid}
        terms = []
        for i, j in pairs:
            if name == "dpo":
                beta, eps = hp.get("beta", 0.1), hp.get("label_smoothing", 0.0)
                h = beta * (ratio[i] - ratio[j])
                terms.append(-(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h))
            elif name == "ipo":
                terms.append((ratio[i] - ratio[j] - 1 / (2 * hp.get("beta", 0.1))) ** 2)
            elif name == "r_dpo":
                h = hp.get("beta", 0.1) * (ratio[i] - ratio[j]) + hp.get("alpha", 0.01) * (lens[r][i] - lens[r][j])
                terms.append(-log_sigmoid(h))
            elif name == "simpo":
                terms.append(-log_sigmoid(hp.get("beta", 2.0) * (mean[i] - mean[j]) - hp.get("gamma", 0.5)))
            elif name == "cpo":
                terms.append(-log_sigmoid(hp.get("beta", 0.1) * (pol[r][i] - pol[r][j])))
            elif name == "orpo":
                odds = [m - math.log(1 - math.exp(m)) for m in (mean[i], mean[j])]
                terms.append(-log_sigmoid(odds[0] - odds[1]))
            elif name == "slic_hf":
                terms.append(max(0.0, hp.get("delta", 1.0) - pol[r][i] + pol[r][j]))
        loss = sum(terms) / len(terms)
        if name == "cpo":
            loss += hp.get("nll_weight", 1.0) * nll
        elif name == "orpo":
            loss = nll + hp.get("lam", 0.1) * loss
        elif name == "slic_hf":
            loss += hp.get("lam", 0.1) * nll
        out.append(loss)
    return out


def reference_kto(b, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    B, K = b.policy_logps.shape
    mk = b.mask.tolist()
    ratio = [[b.policy_logps[r, i].item() - b.ref_logps[r, i].item() for i in range(K)] for r in range(B)]
    valid = [ratio[r][i] for r in range(B) for i in range(K) if mk[r][i]]
    z0 = max(0.0, sum(valid) / len(valid)) if valid else 0.0
    out = []
    for r in range(B):
        sc = b.scores[r].tolist()
        if b.desirable is None:
            if not strict_pairs(sc, mk[r]):
                out.append(0.0)
                continue
            top = max(sc[i] for i in range(K) if mk[r][i])
            good = [mk[r][i] and sc[i] == top for i in range(K)]
        else:
            good = [bool(d) for d in b.desirable[r].tolist()]
        total = 0.0
        for i in range(K):
            if mk[r][i]:
                if good[i]:
                    total += desirable_weight * (1 - sigmoid(beta * (ratio[r][i] - z0)))
                else:
                    total += undesirable_weight * (1 - sigmoid(beta * (z0 - ratio[r][i])))
        out.append(total)
    return out


def random_batch(g, rows, k, ties=3, desirable=False):
    """Log-probs in [-30.1, -0.1], lengths 1..20, integer scores (ties), ~25% masked with
    garbage in every masked slot (NaN log-probs, real scores)."""
    mask = torch.rand(rows, k, generator=g) > 0.25
    policy = -(torch.rand(rows, k, generator=g) * 30 + 0.1)
    ref = -(torch.rand(rows, k, generator=g) * 30 + 0.1)
    lengths = torch.randint(1, 21, (rows, k), generator=g).float()
    scores = torch.randint(0, ties, (rows, k), generator=g).float()
    junk = torch.randint(-1, ties + 1, (rows, k), generator=g).float()
    labels = torch.rand(rows, k, generator=g) > 0.5 if desirable else None
    garbage = torch.full((rows, k), NAN)
    return RankedBatch(
        torch.where(mask, policy, garbage).requires_grad_(), torch.where(mask, ref, garbage),
        torch.where(mask, lengths, torch.zeros(())), torch.where(mask, scores, junk), mask, labels)


HYPERPARAMETERS = {
    "dpo": {"beta": 0.3, "label_smoothing": 0.2}, "ipo": {"beta": 0.5}, "r_dpo": {"beta": 0.2, "alpha": 0.05},
    "simpo": {"beta": 2.5, "gamma": 1.2}, "cpo": {"beta": 0.2, "nll_weight": 0.7}, "orpo": {"lam": 0.3},
    "slic_hf": {"delta": 5.0, "lam": 0.2}, "kto": {"beta": 0.2, "desirable_weight": 1.5, "undesirable_weight": 0.5},
}


@pytest.mark.parametrize("name", WITH_A_LOOP)
@pytest.mark.parametrize("hp", [False, True], ids=["defaults", "custom"])
def test_agrees_with_the_loop_on_rankings_with_ties_and_padding(name, hp):
    b = random_batch(torch.Generator().manual_seed(7), rows=6, k=5)
    hp = HYPERPARAMETERS[name] if hp else {}
    torch.testing.assert_close(LOSSES[name](b, **hp)[0], torch.tensor(reference_losses(name, b, **hp)),
                               rtol=1e-5, atol=1e-5)


def test_kto_with_desirable_labels_agrees_with_the_loop():
    b = random_batch(torch.Generator().manual_seed(3), rows=5, k=3, desirable=True)
    b.ref_logps = b.ref_logps - 10.0  # mean ratio ~ +10: z0 > 0, so padding in its mean would show
    losses, metrics = kto(b)
    assert metrics["kl"].item() > 5
    torch.testing.assert_close(losses, torch.tensor(reference_kto(b)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gradients, masks, extremes


@pytest.mark.parametrize("name", PAIRWISE)
def test_gradient_raises_better_and_lowers_worse(name):
    # three responses ranked 0 > 1 > 2; every hinge is active (gaps 0.2 < delta = 1)
    b = batch([[-6.0, -6.2, -6.4]], ref=[[-6.0, -6.0, -6.0]], lengths=[[3.0, 3.0, 3.0]], grad=True)
    LOSSES[name](b)[0].sum().backward()
    grad = b.policy_logps.grad[0]
    assert grad[0] < 0, "the loss must fall when the best response's log-prob rises"
    assert grad[2] > 0, "the loss must rise when the worst response's log-prob rises"
    # reversing the ranking reverses the roles
    b = batch([[-6.0, -6.2, -6.4]], ref=[[-6.0, -6.0, -6.0]], lengths=[[3.0, 3.0, 3.0]],
              scores=[[0.0, 1.0, 2.0]], grad=True)
    LOSSES[name](b)[0].sum().backward()
    assert b.policy_logps.grad[0, 2] < 0 and b.policy_logps.grad[0, 0] > 0


@pytest.mark.parametrize("name", PAIRWISE)
def test_masked_and_tied_entries_have_zero_gradient(name):
    inf = float("inf")
    b = batch([[-5.0, -6.0, NAN, inf], [-5.0, -6.0, -7.0, -8.0], [NAN, NAN, NAN, NAN]],
              ref=[[-5.5, -5.5, NAN, -inf], [-5.5, -5.5, -5.5, -5.5], [NAN, NAN, NAN, NAN]],
              scores=[[1.0, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0]],
              mask=[[True, True, False, False], [True, True, True, True], [False, False, False, False]],
              lengths=[[2.0, 2.0, 0.0, NAN], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]], grad=True)
    losses, metrics = LOSSES[name](b)
    assert torch.isfinite(losses).all() and losses[0] != 0
    assert losses[1].item() == 0.0 and losses[2].item() == 0.0, "all-tied and all-masked rows give exactly 0"
    losses.sum().backward()
    grad = b.policy_logps.grad
    assert torch.isfinite(grad).all()
    assert (grad[0, 2:] == 0).all() and (grad[1:] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())


@pytest.mark.parametrize("name", PAIRWISE)
def test_finite_at_extreme_margins(name):
    # log-ratio margins of about +-2e4, summed log-probs down to -1e4
    b = batch([[-1e-3, -1e4], [-1e4, -1e-3]], ref=[[-1e4, -1e-3], [-1e-3, -1e4]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(b.policy_logps.grad).all()


def test_dpo_at_extreme_margins_is_exact():
    # h = 0.1 * 2e4 = 2000 -> loss 0 (to fp32); h = -2000 -> loss = 2000 (softplus is linear there)
    b = batch([[1e4, -1e4], [-1e4, 1e4]], ref=[[0.0, 0.0], [0.0, 0.0]])
    assert dpo(b)[0].tolist() == [0.0, 2000.0]


def test_computes_in_float32_from_bfloat16_inputs():
    b = batch([[-1.0, -3.0]], ref=[[-2.0, -2.0]])
    b16 = RankedBatch(b.policy_logps.bfloat16(), b.ref_logps.bfloat16(), b.lengths, b.scores, b.mask)
    for name in PAIRWISE:
        losses, _ = LOSSES[name](b16)
        assert losses.dtype == torch.float32
        torch.testing.assert_close(losses, LOSSES[name](b)[0])


# ---------------------------------------------------------------- random shapes


@st.composite
def ranked_batches(draw):
    rows, k = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    b = random_batch(torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1))), rows, k,
                     ties=draw(st.integers(1, 4)))
    if draw(st.booleans()):  # one row entirely padding
        row = draw(st.integers(0, rows - 1))
        b.mask[row] = False
        b.policy_logps.data[row] = NAN
    return b


@settings(max_examples=40, deadline=None, database=None)
@given(b=ranked_batches(), name=st.sampled_from(WITH_A_LOOP))  # checked against the loops
def test_random_shapes(b, name):
    losses, metrics = LOSSES[name](b)
    assert losses.shape == (b.batch_size,) and losses.dtype == torch.float32
    assert torch.isfinite(losses).all()
    no_pair = ~(b.mask[:, :, None] & b.mask[:, None, :] & (b.scores[:, :, None] > b.scores[:, None, :])).flatten(1).any(1)
    assert (losses[no_pair] == 0).all()
    torch.testing.assert_close(losses, torch.tensor(reference_losses(name, b)), rtol=1e-5, atol=1e-5)
    losses.sum().backward()
    assert torch.isfinite(b.policy_logps.grad).all() and (b.policy_logps.grad[~b.mask] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())


def test_hinge_by_hand():
    """pi = [-4, -6], pi_ref = [-5, -5]: log-ratios [1, -1], h = 2.
    beta 0.1: L = max(0, 1 - 0.1 * 2) = 0.8, and dL/dpi_w = -0.1, dL/dpi_l = +0.1.
    beta 1: 1 - 2 < 0, so L = 0 and no gradient (the margin is met)."""
    def pair():
        return RankedBatch(torch.tensor([[-4.0, -6.0]], requires_grad=True), torch.tensor([[-5.0, -5.0]]),
                           torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[True, True]]))
    b = pair()
    loss, metrics = LOSSES["hinge"](b, beta=0.1)
    loss.sum().backward()
    assert loss.tolist() == pytest.approx([0.8])
    assert b.policy_logps.grad[0].tolist() == pytest.approx([-0.1, 0.1])
    assert float(metrics["rewards/margin"]) == pytest.approx(0.2)
    b = pair()
    loss, _ = LOSSES["hinge"](b, beta=1.0)
    loss.sum().backward()
    assert loss.tolist() == [0.0] and b.policy_logps.grad.abs().sum() == 0
