"""User reward functions for tests/rewards/test_simple.py, imported as ``user_rewards:NAME``."""

import numpy as np
import torch


def exclamations(prompts, responses):
    """Sequence reward: the number of '!' in each response (a list of floats)."""
    return [float(r.count("!")) for r in responses]


def as_numpy(prompts, responses):
    return np.array([len(r) for r in responses], dtype=np.float64)


def as_tensor(prompts, responses):
    return torch.tensor([len(p) for p in prompts], dtype=torch.float32)


def halves(prompts, responses):
    """Dense reward: +1 for the first half of each response, -0.5 for the second (given unsorted)."""
    return [[(len(r), -0.5), (len(r) // 2, 1.0)] for r in responses]


def one_short(prompts, responses):
    return [0.0] * (len(responses) - 1)


def column(prompts, responses):
    return torch.zeros(len(responses), 1)


def strings(prompts, responses):
    return ["good" for _ in responses]


def bad_segment(prompts, responses):
    return [[(len(r) + 5, 1.0)] for r in responses]


NOT_CALLABLE = 3
