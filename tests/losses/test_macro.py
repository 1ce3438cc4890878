"""MA-RLHF macro actions: segmentation, macro-level GAE and ratio by hand, and n = 1 == token-level PPO."""

import math

import pytest
import torch

from alignkit.losses.macro import (
    macro_first,
    macro_gae,
    macro_policy_loss,
    macro_starts,
    macro_sum,
    ngram_macro_ids,
    punctuation_macro_ids,
)
from alignkit.losses.rl import gae, ppo_policy_loss, whiten


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def m(*rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_ngram_and_punctuation_segmentation():
    mask = m([1, 1, 1, 1, 1, 0])
    assert ngram_macro_ids(mask, 2).tolist() == [[0, 0, 1, 1, 2, 2]]
    ids = punctuation_macro_ids([["Hi", ",", " you", " there", ". ", "Bye"]], width=7)
    assert ids.tolist() == [[0, 0, 1, 1, 1, 2, 0]]
    assert punctuation_macro_ids([["a", "b", "c", "d"]], 4, max_length=3).tolist() == [[0, 0, 0, 1]]
    assert macro_starts(ids[:, :6], torch.ones(1, 6, dtype=torch.bool)).tolist() == [[1, 0, 1, 0, 0, 1]]
    with pytest.raises(ValueError, match="n >= 1"):
        ngram_macro_ids(mask, 0)


def test_macro_gae_by_hand():
    """Tokens r = [0, 1, 0, 2], V = [1, 9, 2, 9], macros of 2 tokens: R = [1, 2], V(s_m) = [1, 2].

    gamma = lam = 1: delta_1 = 2 + 0 - 2 = 0, A_1 = 0; delta_0 = 1 + 2 - 1 = 2, A_0 = 2 + 0 = 2.
    returns = A + V = [3, 2], broadcast to tokens [3, 3, 2, 2].
    """
    rewards, values, mask = t([0.0, 1.0, 0.0, 2.0]), t([1.0, 9.0, 2.0, 9.0]), m([1, 1, 1, 1])
    ids = ngram_macro_ids(mask, 2)
    assert macro_sum(rewards, ids, mask, 2).tolist() == [[1.0, 2.0]]
    assert macro_first(values, ids, mask, 2).tolist() == [[1.0, 2.0]]
    adv, ret = macro_gae(rewards, values, ids, mask, 1.0, 1.0, whiten_advantages=False)
    assert adv.tolist() == [[2.0, 2.0, 0.0, 0.0]]
    assert ret.tolist() == [[3.0, 3.0, 2.0, 2.0]]


def test_macro_ratio_by_hand():
    """One macro of two tokens with log r = [0.1, 0.15]: rho = e^0.25 = 1.2840 > 1.2, A = 1:
    max(-1.2840, -1.2) = -1.2 (clipped, no gradient). Per token PPO clips neither
    (e^0.1 = 1.1052, e^0.15 = 1.1618 < 1.2): loss -(1.1052 + 1.1618) / 2 = -1.1335."""
    logp, old, adv, mask = t([0.1, 0.15]), torch.zeros(1, 2), t([1.0, 1.0]), m([1, 1])
    loss, stats = macro_policy_loss(logp, old, adv, ngram_macro_ids(mask, 2), mask)
    torch.testing.assert_close(loss, t(-1.2))
    assert stats["clipfrac"].item() == 1.0
    token_loss, _ = ppo_policy_loss(logp, old, adv, mask)
    torch.testing.assert_close(token_loss, t(-(math.exp(0.1) + math.exp(0.15)) / 2))


def test_n_equal_one_is_token_level_ppo_exactly():
    g = torch.Generator().manual_seed(0)
    N, T = 5, 6
    mask = torch.arange(T)[None] < torch.tensor([6, 3, 1, 4, 5])[:, None]
    rewards, values = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    ids = ngram_macro_ids(mask, 1)
    adv, ret = macro_gae(rewards, values, ids, mask, 0.9, 0.95)
    ref_adv, ref_ret = gae(rewards, values, mask, 0.9, 0.95)
    torch.testing.assert_close(adv, whiten(ref_adv, mask), rtol=0, atol=0)
    torch.testing.assert_close(ret, torch.where(mask, ref_ret, 0.0), rtol=0, atol=0)
    logp = torch.randn(N, T, generator=g).requires_grad_()
    old = (logp + 0.3 * torch.randn(N, T, generator=g)).detach()
    loss, stats = macro_policy_loss(logp, old, adv, ids, mask)
    ref_loss, ref_stats = ppo_policy_loss(logp, old, adv, mask)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    for key in ref_stats:
        torch.testing.assert_close(stats[key], ref_stats[key])
    (g1,) = torch.autograd.grad(loss.sum(), logp)
    (g2,) = torch.autograd.grad(ref_loss.sum(), logp)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
