"""Ranking losses: Plackett-Luce by explicit sums, K=2 identities with the pairwise forms,
ties, masks, gradient signs, extremes and random shapes."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid, loop_plackett_luce, strict_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import LOSSES, RankedBatch
from alignkit.losses.listwise import listwise_dpo, pro, rrhf
from alignkit.losses.preference import dpo

LISTWISE = sorted(n for n, fn in LOSSES.items() if fn.trains == "policy" and fn.data == "ranked")  # the registry's
WITH_A_LOOP = ["listwise_dpo", "pro", "rrhf"]  # hand-written loops below
NAN = float("nan")


# ---------------------------------------------------------------- by hand


def test_listwise_dpo_k3_by_hand():
    """beta = 1, rewards [ln 3, ln 2, 0] -> exp = [3, 2, 1], ranked best to worst.
    L = -log(3 / (3 + 2 + 1)) - log(2 / (2 + 1)) = ln 2 + ln 1.5 = ln 3."""
    b = batch([[math.log(3.0), math.log(2.0), 0.0]], ref=[[0.0, 0.0, 0.0]])
    assert listwise_dpo(b, beta=1.0)[0].item() == pytest.approx(math.log(3.0), abs=1e-6)
    # beta = 0.1 on ratios [2, 0, -2]: rewards [0.2, 0, -0.2]
    b = batch([[-1.0, -2.0, -3.0]], ref=[[-3.0, -2.0, -1.0]])
    expected = -(0.2 - math.log(math.exp(0.2) + 1 + math.exp(-0.2))) - (0 - math.log(1 + math.exp(-0.2)))
    assert listwise_dpo(b, beta=0.1)[0].item() == pytest.approx(expected, abs=1e-6)


def test_listwise_dpo_ties_do_not_compete():
    """Responses 0 and 1 tied on top, both above 2: each competes only with 2 (never with the
    other), so L = -log sigma(r0 - r2) - log sigma(r1 - r2) with r = 0.1 * [1, 0, -1]."""
    b = batch([[-1.0, -2.0, -3.0]], ref=[[-2.0, -2.0, -2.0]], scores=[[1.0, 1.0, 0.0]])
    expected = -log_sigmoid(0.1 - -0.1) - log_sigmoid(0.0 - -0.1)
    assert listwise_dpo(b, beta=0.1)[0].item() == pytest.approx(expected, abs=1e-6)
    # tied at the bottom: the top response's denominator holds all three
    b = batch([[-1.0, -2.0, -3.0]], ref=[[-2.0, -2.0, -2.0]], scores=[[1.0, 0.0, 0.0]])
    expected = -(0.1 - math.log(math.exp(0.1) + 1 + math.exp(-0.1)))
    assert listwise_dpo(b, beta=0.1)[0].item() == pytest.approx(expected, abs=1e-6)


def test_pro_by_hand():
    """Per-token means s = [ln 1/2, ln 1/3, ln 1/6] (lengths 2, 1, 3); exp(s) = [1/2, 1/3, 1/6].
    L_rank = -log((1/2) / 1) - log((1/3) / (1/3 + 1/6)) = ln 2 + ln 1.5 = ln 3;
    NLL(y_1) = -ln(1/2) = ln 2; L = ln 3 + 0.05 ln 2 = 1.133270."""
    b = batch([[2 * math.log(1 / 2), math.log(1 / 3), 3 * math.log(1 / 6)]], lengths=[[2.0, 1.0, 3.0]])
    losses, metrics = pro(b)
    assert losses.item() == pytest.approx(math.log(3) + 0.05 * math.log(2), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(math.log(1 / 2))
    assert metrics["rewards/rejected"].item() == pytest.approx(math.log(1 / 6))
    assert metrics["rewards/accuracy"].item() == 1.0
    # temperature 1/2 doubles the scores: exp(2 s) = [1/4, 1/9, 1/36]
    a, c, d = 1 / 4, 1 / 9, 1 / 36
    expected = -math.log(a / (a + c + d)) - math.log(c / (c + d)) + 0.05 * math.log(2)
    assert pro(b, temperature=0.5)[0].item() == pytest.approx(expected, abs=1e-6)


def test_pro_ties():
    """Scores [2, 1, 1]: only y_1 has anything strictly below it; the tied pair is no
    preference. L = -log((1/2) / 1) + 0.05 ln 2 = 1.05 ln 2."""
    b = batch([[2 * math.log(1 / 2), math.log(1 / 3), 3 * math.log(1 / 6)]], lengths=[[2.0, 1.0, 3.0]],
              scores=[[2.0, 1.0, 1.0]])
    assert pro(b)[0].item() == pytest.approx(1.05 * math.log(2), abs=1e-6)


def test_rrhf_by_hand_uses_every_pair():
    """K=3 ranked [a > b > c] with p = [-3, -2, -1] (lengths 1): violations (b over a) 1,
    (c over a) 2, (c over b) 1 -> L_rank = 4 (the authors' first-row-only code counts 3);
    L_ft = NLL(a) = 3; L = 4 + 1 * 3 = 7."""
    assert rrhf(batch([[-3.0, -2.0, -1.0]]))[0].item() == pytest.approx(7.0)
    # correctly ordered p = [-1, -2, -3]: no violation, only L_ft = 1; lam scales it
    assert rrhf(batch([[-1.0, -2.0, -3.0]]), lam=0.5)[0].item() == pytest.approx(0.5)
    # p = [-1, -0.5, -2] by length: (b over a) 0.5 only; L = 0.5 + 1 = 1.5
    b = batch([[-2.0, -1.5, -2.0]], lengths=[[2.0, 3.0, 1.0]])
    assert rrhf(b)[0].item() == pytest.approx(1.5)


# ---------------------------------------------------------------- K=2 identities


def random_batch(g, rows, k, ties=3):
    """Log-probs in [-30.1, -0.1], lengths 1..20, integer scores (ties), ~25% masked with
    garbage in every masked slot (NaN log-probs, real scores)."""
    mask = torch.rand(rows, k, generator=g) > 0.25
    garbage = torch.full((rows, k), NAN)
    policy = torch.where(mask, -(torch.rand(rows, k, generator=g) * 30 + 0.1), garbage)
    ref = torch.where(mask, -(torch.rand(rows, k, generator=g) * 30 + 0.1), garbage)
    lengths = torch.where(mask, torch.randint(1, 21, (rows, k), generator=g).float(), torch.zeros(()))
    junk = torch.randint(-1, ties + 1, (rows, k), generator=g).float()  # masked scores: real numbers
    scores = torch.where(mask, torch.randint(0, ties, (rows, k), generator=g).float(), junk)
    return RankedBatch(policy.requires_grad_(), ref, lengths, scores, mask)


@pytest.mark.parametrize("beta", [0.1, 0.3, 2.0])
def test_listwise_dpo_with_k2_equals_dpo_exactly(beta):
    b = random_batch(torch.Generator().manual_seed(1), rows=32, k=2)
    assert torch.equal(listwise_dpo(b, beta=beta)[0], dpo(b, beta=beta)[0])
    for key, value in dpo(b, beta=beta)[1].items():
        assert torch.equal(listwise_dpo(b, beta=beta)[1][key], value), key


def pairwise_rows(b):
    """(row, w, l) for the K=2 rows holding a strict preference."""
    return [(r, *strict_pairs(b.scores[r].tolist(), b.mask[r].tolist())[0])
            for r in range(b.batch_size) if strict_pairs(b.scores[r].tolist(), b.mask[r].tolist())]


def test_pro_with_k2_is_its_pairwise_form():
    # L = -log sigma(s_w - s_l) + beta * NLL(y_w), s = log pi / |y| (temperature 1)
    b = random_batch(torch.Generator().manual_seed(2), rows=32, k=2)
    expected = torch.zeros(32, dtype=torch.float64)
    for r, w, lose in pairwise_rows(b):
        s_w, s_l = (b.policy_logps[r, i].item() / b.lengths[r, i].item() for i in (w, lose))
        expected[r] = -log_sigmoid(s_w - s_l) + 0.05 * -s_w
    torch.testing.assert_close(pro(b)[0].double(), expected, rtol=1e-5, atol=1e-5)


def test_rrhf_with_k2_is_its_pairwise_hinge():
    # L = max(0, p_l - p_w) + lam * NLL(y_w), p = log pi / |y|
    b = random_batch(torch.Generator().manual_seed(3), rows=32, k=2)
    expected = torch.zeros(32, dtype=torch.float64)
    for r, w, lose in pairwise_rows(b):
        p_w, p_l = (b.policy_logps[r, i].item() / b.lengths[r, i].item() for i in (w, lose))
        expected[r] = max(0.0, p_l - p_w) + 0.7 * -p_w
    torch.testing.assert_close(rrhf(b, lam=0.7)[0].double(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- loop implementation


def reference_losses(name, b, **hp):
    """Each loss with explicit Python loops: Plackett-Luce by explicit sums (helpers), RRHF
    by a double loop over all pairs, the NLL on the first top-scored response."""
    out = []
    for r in range(b.batch_size):
        mask, scores = b.mask[r].tolist(), b.scores[r].tolist()
        if not strict_pairs(scores, mask):
            out.append(0.0)
            continue
        valid = [i for i in range(len(mask)) if mask[i]]
        best = max(valid, key=lambda i: (scores[i], -i))
        mean = {i: b.policy_logps[r, i].item() / b.lengths[r, i].item() for i in valid}
        values = [0.0] * len(mask)
        if name == "listwise_dpo":
            for i in valid:
                values[i] = hp.get("beta", 0.1) * (b.policy_logps[r, i].item() - b.ref_logps[r, i].item())
            out.append(loop_plackett_luce(values, scores, mask))
        elif name == "pro":
            for i in valid:
                values[i] = mean[i] / hp.get("temperature", 1.0)
            out.append(loop_plackett_luce(values, scores, mask) + hp.get("beta", 0.05) * -mean[best])
        else:
            rank = sum(max(0.0, mean[j] - mean[i]) for i in valid for j in valid if scores[i] > scores[j])
            out.append(rank + hp.get("lam", 1.0) * -mean[best])
    return torch.tensor(out)


HYPERPARAMETERS = {"listwise_dpo": {"beta": 0.5}, "pro": {"beta": 0.3, "temperature": 0.2}, "rrhf": {"lam": 0.4}}


@pytest.mark.parametrize("name", WITH_A_LOOP)
@pytest.mark.parametrize("hp", [False, True], ids=["defaults", "custom"])
def test_agrees_with_the_loop_on_rankings_with_ties_and_padding(name, hp):
    b = random_batch(torch.Generator().manual_seed(5), rows=6, k=6)
    hp = HYPERPARAMETERS[name] if hp else {}
    torch.testing.assert_close(LOSSES[name](b, **hp)[0], reference_losses(name, b, **hp), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- gradients, masks, extremes


@pytest.mark.parametrize("name", LISTWISE)
def test_gradient_raises_better_and_lowers_worse(name):
    # ranked 0 > 1 > 2; for RRHF the per-token means are mis-ordered so that every hinge is active
    policy = [[-8.0, -7.0, -6.0]] if name == "rrhf" else [[-6.0, -7.0, -8.0]]
    b = batch(policy, ref=[[-7.0, -7.0, -7.0]], lengths=[[3.0, 3.0, 3.0]], grad=True)
    LOSSES[name](b)[0].sum().backward()
    grad = b.policy_logps.grad[0]
    assert grad[0] < 0, "the loss must fall when the best response's log-prob rises"
    assert grad[2] > 0, "the loss must rise when the worst response's log-prob rises"


@pytest.mark.parametrize("name", LISTWISE)
def test_masked_and_tied_entries_have_zero_gradient(name):
    inf = float("inf")
    b = batch([[-6.0, -7.0, NAN, -inf], [-5.0, -6.0, -7.0, -8.0], [NAN, NAN, NAN, NAN]],
              ref=[[-7.0, -7.0, NAN, inf], [-5.5, -5.5, -5.5, -5.5], [NAN, NAN, NAN, NAN]],
              scores=[[1.0, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0]],
              mask=[[True, True, False, False], [True, True, True, True], [False, False, False, False]],
              lengths=[[3.0, 3.0, 0.0, NAN], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]], grad=True)
    losses, metrics = LOSSES[name](b)
    assert torch.isfinite(losses).all() and losses[0] != 0
    assert losses[1].item() == 0.0 and losses[2].item() == 0.0, "all-tied and all-masked rows give exactly 0"
    losses.sum().backward()
    grad = b.policy_logps.grad
    assert torch.isfinite(grad).all() and (grad[0, 2:] == 0).all() and (grad[1:] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())


@pytest.mark.parametrize("name", LISTWISE)
def test_finite_at_extreme_margins(name):
    b = batch([[-1e-3, -1e4, -5e3], [-1e4, -5e3, -1e-3]], ref=[[-1e4, -1e-3, -5e3], [-1e-3, -5e3, -1e4]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(b.policy_logps.grad).all()


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
@given(b=ranked_batches(), name=st.sampled_from(LISTWISE))
def test_random_shapes(b, name):
    losses, metrics = LOSSES[name](b)
    assert losses.shape == (b.batch_size,) and losses.dtype == torch.float32
    assert torch.isfinite(losses).all()
    no_pair = ~(b.mask[:, :, None] & b.mask[:, None, :] & (b.scores[:, :, None] > b.scores[:, None, :])).flatten(1).any(1)
    assert (losses[no_pair] == 0).all()
    torch.testing.assert_close(losses, reference_losses(name, b), rtol=1e-5, atol=1e-5)
    losses.sum().backward()
    assert torch.isfinite(b.policy_logps.grad).all() and (b.policy_logps.grad[~b.mask] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
