"""Independent, loop-based reference implementations the vectorised losses are checked against."""

import math

import torch

from alignkit.losses import RankedBatch


def batch(policy, ref=None, scores=None, mask=None, lengths=None, desirable=None, grad=False):
    policy = torch.tensor(policy, dtype=torch.float32, requires_grad=grad)
    shape = policy.shape
    return RankedBatch(
        policy_logps=policy,
        ref_logps=None if ref is None else torch.tensor(ref, dtype=torch.float32),
        lengths=torch.ones(shape) if lengths is None else torch.tensor(lengths, dtype=torch.float32),
        scores=torch.tensor(scores, dtype=torch.float32) if scores is not None else torch.arange(shape[1], 0, -1.0).expand(shape),
        mask=torch.ones(shape, dtype=torch.bool) if mask is None else torch.tensor(mask),
        desirable=None if desirable is None else torch.tensor(desirable),
    )


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def strict_pairs(scores, mask):
    k = len(scores)
    return [(i, j) for i in range(k) for j in range(k) if mask[i] and mask[j] and scores[i] > scores[j]]


def loop_pairwise(b, per_pair):
    """Mean over a row's strict pairs of per_pair(b, row, i, j); 0 without pairs."""
    out = []
    for row in range(b.policy_logps.shape[0]):
        pairs = strict_pairs(b.scores[row].tolist(), b.mask[row].tolist())
        out.append(sum(per_pair(row, i, j) for i, j in pairs) / len(pairs) if pairs else 0.0)
    return torch.tensor(out)


def loop_plackett_luce(values, scores, mask):
    """-sum_i log(e^{v_i} / (e^{v_i} + sum_{j below i} e^{v_j})) for one row, by explicit sums."""
    total = 0.0
    for i in range(len(values)):
        if not mask[i]:
            continue
        below = [j for j in range(len(values)) if mask[j] and scores[j] < scores[i]]
        if below:
            denom = math.exp(values[i]) + sum(math.exp(values[j]) for j in below)
            total -= values[i] - math.log(denom)
    return total
