"""Reward-model losses: Bradley-Terry and InstructGPT's K-wise loss over the reward model's
scalar outputs r, carried in ``RankedBatch.policy_logps``."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid, strict_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import LOSSES, RankedBatch
from alignkit.losses.reward import bradley_terry, kwise

REWARD = ["bradley_terry", "kwise"]
NAN = float("nan")


def test_bradley_terry_by_hand_and_margin():
    # r = [1.5, 0.5]: -log sigma(1) = log(1 + e^-1) = 0.313262; margin 1: -log sigma(0) = ln 2
    b = batch([[1.5, 0.5]])
    assert bradley_terry(b)[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), abs=1e-6)
    assert bradley_terry(b, margin=1.0)[0].item() == pytest.approx(math.log(2), abs=1e-6)
    # reversed preference: -log sigma(-1) = log(1 + e) = 1.313262
    assert bradley_terry(batch([[1.5, 0.5]], scores=[[0.0, 1.0]]))[0].item() == pytest.approx(
        math.log1p(math.e), abs=1e-6)


def test_kwise_averages_all_k_choose_2_pairs():
    """K=3 ranked [0 > 1 > 2], r = [2, 1, 0]: pairs (0,1), (0,2), (1,2) with margins 1, 2, 1:
    L = (2 log(1 + e^-1) + log(1 + e^-2)) / 3 = 0.251192."""
    losses, metrics = kwise(batch([[2.0, 1.0, 0.0]]))
    assert losses.item() == pytest.approx((2 * math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 3, abs=1e-6)
    assert metrics["accuracy"].item() == 1.0
    assert metrics["margin"].item() == 2.0  # best (r=2) minus worst (r=0)
    assert metrics["mean_reward"].item() == 1.0  # (2 + 1 + 0) / 3


def test_kwise_skips_ties_and_averages_over_the_rest():
    """Scores [2, 1, 1]: the tie (1, 2) is no pair; mean over the two others:
    (log(1 + e^-1) + log(1 + e^-2)) / 2."""
    b = batch([[2.0, 1.0, 0.0]], scores=[[2.0, 1.0, 1.0]])
    assert kwise(b)[0].item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2, abs=1e-6)


def random_batch(g, rows, k, ties=3):
    """Rewards in [-5, 5], integer scores (ties), ~25% masked with garbage (NaN rewards, real scores)."""
    mask = torch.rand(rows, k, generator=g) > 0.25
    garbage = torch.full((rows, k), NAN)
    r = torch.where(mask, torch.rand(rows, k, generator=g) * 10 - 5, garbage)
    junk = torch.randint(-1, ties + 1, (rows, k), generator=g).float()  # masked scores: real numbers
    scores = torch.where(mask, torch.randint(0, ties, (rows, k), generator=g).float(), junk)
    return RankedBatch(r.requires_grad_(), None, mask.long(), scores, mask)


def reference_losses(b, margin=0.0):
    """Mean over each row's strict pairs of -log sigma(r_w - r_l - margin), by loops."""
    out = []
    for row in range(b.batch_size):
        pairs = strict_pairs(b.scores[row].tolist(), b.mask[row].tolist())
        r = b.policy_logps[row].tolist()
        out.append(sum(-log_sigmoid(r[i] - r[j] - margin) for i, j in pairs) / len(pairs) if pairs else 0.0)
    return torch.tensor(out)


@pytest.mark.parametrize("margin", [0.0, 0.7])
def test_bradley_terry_agrees_with_the_loop(margin):
    b = random_batch(torch.Generator().manual_seed(0), rows=8, k=5)
    torch.testing.assert_close(bradley_terry(b, margin=margin)[0], reference_losses(b, margin), rtol=1e-5, atol=1e-6)


def test_kwise_is_bradley_terry_without_margin():
    b = random_batch(torch.Generator().manual_seed(1), rows=8, k=4)
    assert torch.equal(kwise(b)[0], bradley_terry(b)[0])
    b = random_batch(torch.Generator().manual_seed(2), rows=8, k=2)
    torch.testing.assert_close(kwise(b)[0], reference_losses(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", REWARD)
def test_gradients_point_the_right_way(name):
    b = batch([[0.3, 0.9, -0.2], [2.0, -1.0, 0.0]], grad=True)
    LOSSES[name](b)[0].sum().backward()
    assert (b.policy_logps.grad[:, 0] < 0).all() and (b.policy_logps.grad[:, 2] > 0).all()
    # r = [0.3, 0.9, -0.2]: pairs (0,1) wrong, (0,2) and (1,2) right; [2, -1, 0]: (1,2) wrong
    _, metrics = LOSSES[name](b)
    assert metrics["accuracy"].item() == pytest.approx(4 / 6)


@pytest.mark.parametrize("name", REWARD)
def test_masked_and_tied_entries_have_zero_gradient(name):
    b = batch([[1.0, 0.0, NAN, float("inf")], [1.0, 2.0, 3.0, 4.0], [NAN, NAN, NAN, NAN]],
              scores=[[1.0, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [3.0, 2.0, 1.0, 0.0]],
              mask=[[True, True, False, False], [True, True, True, True], [False, False, False, False]], grad=True)
    losses, metrics = LOSSES[name](b)
    assert torch.isfinite(losses).all() and losses[0] != 0 and losses[1] == 0 and losses[2] == 0
    losses.sum().backward()
    grad = b.policy_logps.grad
    assert torch.isfinite(grad).all() and (grad[0, 2:] == 0).all() and (grad[1:] == 0).all()
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())


@pytest.mark.parametrize("name", REWARD)
def test_finite_and_exact_at_extreme_margins(name):
    b = batch([[1e4, -1e4], [-1e4, 1e4]], grad=True)
    losses, _ = LOSSES[name](b)
    losses.sum().backward()
    assert losses.tolist() == [0.0, 2e4] and torch.isfinite(b.policy_logps.grad).all()


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
@given(b=ranked_batches(), name=st.sampled_from(REWARD))
def test_random_shapes(b, name):
    losses, metrics = LOSSES[name](b)
    assert losses.shape == (b.batch_size,) and torch.isfinite(losses).all()
    torch.testing.assert_close(losses, reference_losses(b), rtol=1e-5, atol=1e-6)
    losses.sum().backward()
    assert torch.isfinite(b.policy_logps.grad).all() and (b.policy_logps.grad[~b.mask] == 0).all()
    assert 0.0 <= metrics["accuracy"].item() <= 1.0


def test_segment_error_loss_is_cross_entropy_at_each_segment_end():
    """Row 1: logits (0, 0), label 1: log(e^0 + e^0) - 0 = log 2 = 0.6931.
    Row 2: logits (2, 0), label 0: log(e^2 + e^0) - 2 = log(1 + e^-2) = 0.1269.
    The gradient raises the labelled class: d/dz_label = softmax_label - 1 < 0."""
    import math

    import torch

    from alignkit.losses.reward import segment_error_loss

    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]], requires_grad=True)
    losses = segment_error_loss(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(losses, torch.tensor([math.log(2), math.log(1 + math.exp(-2))]))
    losses.sum().backward()
    assert logits.grad[0, 1] < 0 and logits.grad[1, 0] < 0
    extreme = segment_error_loss(torch.tensor([[1e4, -1e4]]), torch.tensor([1]))
    assert torch.isfinite(extreme).all() and float(extreme) == pytest.approx(2e4)


def test_segment_error_loss_weighs_error_segments_by_error_weight():
    """error_weight 3: the error row (label 1) costs 3 log 2 = 2.0794, the correct row keeps
    log(1 + e^-2) = 0.1269 (weight 1)."""
    import math

    import torch

    from alignkit.losses.reward import segment_error_loss

    losses = segment_error_loss(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 0]), error_weight=3.0)
    torch.testing.assert_close(losses, torch.tensor([3 * math.log(2), math.log(1 + math.exp(-2))]))
