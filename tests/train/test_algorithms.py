"""The on-policy algorithms registry: an advantage estimator worked by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from alignkit.config.rl import PPOConfig
from alignkit.train.algorithms import ALGORITHMS


def test_reinforce_pp_normalises_the_return_to_go_over_the_global_batch():
    """OpenRLHF's REINFORCE++. Shaped rewards r = [[-0.1, -0.1, 1.0], [0.0, 0.5, (pad)]]: returns-to-go
    [[0.8, 0.9, 1.0], [0.5, 0.5]]. Over the 5 valid tokens: mean 3.7 / 5 = 0.74; biased variance
    (0.06^2 + 0.16^2 + 0.26^2 + 2 * 0.24^2) / 5 = 0.212 / 5 = 0.0424; advantage = (G - 0.74) / sqrt(0.0424),
    0 on padding. No critic, no returns; the loss sums over tokens and the batch divides by its tokens."""
    from alignkit.train.rl_family import token_sum_policy_loss

    algo = ALGORITHMS["reinforce_pp"]
    assert algo.policy_loss is token_sum_policy_loss and algo.token_level
    assert not algo.critic and algo.min_samples == 1
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rewards = torch.tensor([[-0.1, -0.1, 1.0], [0.0, 0.5, 7.0]])  # 7.0 sits on padding: ignored
    advantages, returns = algo.advantages(SimpleNamespace(mask=mask), rewards, torch.zeros(2), PPOConfig())
    std = math.sqrt(0.0424)
    expected = [[(g - 0.74) / std for g in (0.8, 0.9, 1.0)], [(0.5 - 0.74) / std, (0.5 - 0.74) / std, 0.0]]
    assert advantages.tolist() == [pytest.approx(row, abs=1e-5) for row in expected]
    assert returns is None


def test_every_algorithm_is_an_rl_method():
    from alignkit.train.methods import all_methods

    methods = all_methods()
    assert {"ppo", "rloo", "grpo", "reinforce_pp"} <= set(ALGORITHMS)
    assert all(methods[name].family == "rl" and methods[name].uses == name for name in ALGORITHMS)
