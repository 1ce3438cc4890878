"""The E-step of MaxMin-RLHF's mixture of reward models (Chakraborty et al. 2024, arXiv 2402.08925).

Preferences come from annotators (users) who belong to H unknown groups; group h has its own
Bradley-Terry reward r_h. The paper's EM (its sec. 4.1, Algorithm 1) alternates

- E-step: assign each annotator u to the group whose reward explains its preferences best,
  ``h(u) = argmax_h sum_{(x, y_w, y_l) of u} log sigma(r_h(x, y_w) - r_h(x, y_l))``  (hard);
  soft EM's responsibilities are ``softmax_h(log pi_h + that sum)`` instead;
- M-step: refit each r_h by the Bradley-Terry loss on the preferences of its annotators
  (:mod:`alignkit.train.maxmin`).

Pure functions over tensors, no model: the trainer scores every pair under every group's
reward model (``chosen``, ``rejected`` ``[N, H]``) and calls these. An "owner" is the unit that
gets assigned: an annotator, or the example itself when the data has no annotator ids.

Shapes: N pairs, H groups, A owners.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def pair_log_likelihoods(chosen: Tensor, rejected: Tensor) -> Tensor:
    """``log P_h(y_w > y_l) = log sigma(r_h(y_w) - r_h(y_l))`` (Bradley-Terry), ``[N, H]`` in, ``[N, H]`` out."""
    return F.logsigmoid(chosen.float() - rejected.float())


def owner_log_likelihoods(pair_ll: Tensor, owner: Tensor, num_owners: int) -> Tensor:
    """``L[u, h] = sum_{n: owner[n] = u} pair_ll[n, h]``: each owner's preferences under each group.

    ``pair_ll`` ``[N, H]``, ``owner`` ``[N]`` (long, in ``[0, A)``) -> ``[A, H]``. The log-likelihood of all
    of u's preferences (independent given the group), the quantity the E-step maximises over h.
    """
    out = torch.zeros(num_owners, pair_ll.shape[1], dtype=pair_ll.dtype, device=pair_ll.device)
    return out.index_add_(0, owner.long(), pair_ll)


def hard_assignments(owner_ll: Tensor) -> Tensor:
    """The paper's E-step: ``h(u) = argmax_h L[u, h]``, ``[A, H]`` -> ``[A]`` (ties: the lowest h)."""
    return owner_ll.argmax(dim=1)


def soft_assignments(owner_ll: Tensor, log_prior: Tensor | None = None) -> Tensor:
    """Soft EM's responsibilities ``gamma[u, h] = pi_h exp(L[u, h]) / sum_g pi_g exp(L[u, g])``, ``[A, H]``.

    ``log_prior`` ``[H]``: ``log pi_h`` (uniform when None). Rows sum to 1; computed as a softmax of
    ``log pi + L`` so that the large sums of log-likelihoods do not underflow.
    """
    logits = owner_ll.float()
    if log_prior is not None:
        logits = logits + log_prior.float()
    return torch.softmax(logits, dim=1)


def quantile_init(owner_fit: Tensor, num_groups: int) -> Tensor:
    """The initial assignment: owners sorted by how well one pooled reward explains them (``owner_fit``
    ``[A]``, e.g. the mean pair log-likelihood under a reward model trained on all data), best first,
    cut into ``num_groups`` near-equal runs -> group ``[A]``.

    Group 0 starts with the owners the pooled reward serves best, the last group with those it serves
    worst: the pooled reward is pulled towards the majority, so a minority starts concentrated in the
    last group instead of spread evenly, as a random split would leave it.
    """
    order = torch.argsort(owner_fit, descending=True, stable=True)
    groups = torch.empty(len(owner_fit), dtype=torch.long)
    for h, chunk in enumerate(torch.tensor_split(order, num_groups)):
        groups[chunk] = h
    return groups


def clustering_accuracy(predicted: Tensor, truth: Tensor) -> float:
    """The fraction of owners in the right group under the best matching of predicted groups to true
    ones (group labels are arbitrary), ``max_perm mean(perm[predicted] == truth)``; ``[A]``, ``[A]``.

    Tries every permutation of the larger label set: fine for the few groups a mixture has.
    """
    predicted, truth = predicted.long(), truth.long()
    if len(predicted) == 0:
        return float("nan")
    size = int(max(predicted.max(), truth.max())) + 1
    if size > 8:
        raise ValueError(f"clustering_accuracy tries every matching of labels; {size} groups are too many")
    best = 0.0
    for perm in itertools.permutations(range(size)):
        mapped = torch.tensor(perm)[predicted]
        best = max(best, float((mapped == truth).float().mean()))
    return best
