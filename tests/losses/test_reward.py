"""Reward-model losses: Bradley-Terry and InstructGPT's K-wise loss."""

import math

import pytest
import torch
from helpers import batch, log_sigmoid

from alignkit.losses.reward import bradley_terry, kwise


def test_bradley_terry_by_hand_and_margin():
    b = batch([[1.5, 0.5]])
    assert bradley_terry(b)[0].item() == pytest.approx(-log_sigmoid(1.0), abs=1e-6)
    assert bradley_terry(b, margin=1.0)[0].item() == pytest.approx(math.log(2), abs=1e-6)


def test_kwise_averages_all_pairs_with_one_over_k_choose_2():
    # K=3 ranked [0 > 1 > 2], r = [2, 1, 0]: pairs (0,1),(0,2),(1,2) with margins 1, 2, 1
    b = batch([[2.0, 1.0, 0.0]])
    expected = -(2 * log_sigmoid(1.0) + log_sigmoid(2.0)) / 3
    assert kwise(b)[0].item() == pytest.approx(expected, abs=1e-6)
    # a tie between 1 and 2 is skipped but the weight stays 1/C(3,2)
    b = batch([[2.0, 1.0, 0.0]], scores=[[2.0, 1.0, 1.0]])
    assert kwise(b)[0].item() == pytest.approx(-(log_sigmoid(1.0) + log_sigmoid(2.0)) / 3, abs=1e-6)


def test_kwise_with_k2_equals_bradley_terry_and_gradients_point_right():
    b = batch([[0.3, 0.9], [2.0, -1.0]], grad=True)
    torch.testing.assert_close(kwise(b)[0], bradley_terry(b)[0])
    kwise(b)[0].sum().backward()
    assert (b.policy_logps.grad[:, 0] < 0).all() and (b.policy_logps.grad[:, 1] > 0).all()
    _, metrics = bradley_terry(b)
    assert metrics["rewards/accuracy"].item() == 0.5
