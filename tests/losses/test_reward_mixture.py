"""MaxMin-RLHF's E-step, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.reward_mixture import (
    clustering_accuracy,
    hard_assignments,
    owner_log_likelihoods,
    pair_log_likelihoods,
    quantile_init,
    soft_assignments,
)


def test_pair_log_likelihoods_is_bradley_terry():
    """margin 0 -> log sigma(0) = log 1/2; margin ln 3 -> log sigma(ln 3) = log 3/4; margin -ln 3 -> log 1/4."""
    chosen = torch.tensor([[1.0, 2.0 + math.log(3)], [0.0, 0.0]])
    rejected = torch.tensor([[1.0, 2.0], [math.log(3), 5.0]])
    ll = pair_log_likelihoods(chosen, rejected)
    expected = torch.tensor([[math.log(0.5), math.log(0.75)], [math.log(0.25), math.log(torch.sigmoid(torch.tensor(-5.0)))]])
    assert torch.allclose(ll, expected, atol=1e-6)


def test_hand_worked_e_step():
    """Two groups, two annotators, three pairs.

    Group 0's reward prefers y_w in every pair by a margin ln 3 (P = 3/4); group 1's by -ln 3 (P = 1/4),
    except pair 2 where it agrees (+ln 3). Annotator 0 owns pairs 0 and 1, annotator 1 owns pair 2.

      L[0] = [2 log 3/4, 2 log 1/4] -> group 0
      L[1] = [log 3/4,   log 3/4  ] -> a tie, the lowest index: group 0
    Soft responsibilities with a uniform prior: annotator 0 gets
      gamma_0 = (3/4)^2 / ((3/4)^2 + (1/4)^2) = 9/10, annotator 1 gets 1/2 each;
    with prior pi = (1/4, 3/4) annotator 1 gets gamma_1 = 3/4.
    """
    ln3 = math.log(3)
    margin = torch.tensor([[ln3, -ln3], [ln3, -ln3], [ln3, ln3]])
    pair_ll = pair_log_likelihoods(margin, torch.zeros_like(margin))
    owner = torch.tensor([0, 0, 1])
    L = owner_log_likelihoods(pair_ll, owner, num_owners=2)
    assert torch.allclose(L, torch.tensor([[2 * math.log(0.75), 2 * math.log(0.25)],
                                           [math.log(0.75), math.log(0.75)]]), atol=1e-6)
    assert hard_assignments(L).tolist() == [0, 0]
    gamma = soft_assignments(L)
    assert torch.allclose(gamma, torch.tensor([[0.9, 0.1], [0.5, 0.5]]), atol=1e-6)
    prior = soft_assignments(L, torch.log(torch.tensor([0.25, 0.75])))
    assert prior[1, 1].item() == pytest.approx(0.75, abs=1e-6)


def test_an_annotator_the_second_group_explains_moves_there():
    """One pair, margins (-2, +2): group 1 explains the preference (sigma(2) > sigma(-2))."""
    L = owner_log_likelihoods(pair_log_likelihoods(torch.tensor([[-2.0, 2.0]]), torch.zeros(1, 2)),
                              torch.tensor([0]), 1)
    assert hard_assignments(L).tolist() == [1]


def test_soft_assignments_do_not_underflow_on_large_sums():
    L = torch.tensor([[-2000.0, -2010.0]])  # exp() of either is 0 in float32
    gamma = soft_assignments(L)
    assert torch.isfinite(gamma).all() and gamma[0, 0].item() == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-5)


def test_owners_without_pairs_sum_to_zero():
    L = owner_log_likelihoods(torch.tensor([[-1.0, -2.0]]), torch.tensor([2]), num_owners=3)
    assert L[:2].abs().sum() == 0 and L[2].tolist() == [-1.0, -2.0]


def test_quantile_init_puts_the_worst_explained_owners_last():
    fit = torch.tensor([-0.2, -0.9, -0.1, -0.5, -0.7])  # best first: 2, 0, 3 | 4, 1
    assert quantile_init(fit, 2).tolist() == [0, 1, 0, 0, 1]
    assert quantile_init(fit, 1).tolist() == [0] * 5


def test_clustering_accuracy_matches_labels_first():
    truth = torch.tensor([0, 0, 0, 1, 1])
    assert clustering_accuracy(torch.tensor([1, 1, 1, 0, 0]), truth) == 1.0  # swapped labels are right
    assert clustering_accuracy(torch.tensor([1, 1, 0, 0, 0]), truth) == pytest.approx(4 / 5)
    assert clustering_accuracy(torch.tensor([0, 0, 0, 0, 0]), truth) == pytest.approx(3 / 5)
