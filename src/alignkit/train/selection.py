"""The select step of the sampling methods, and their settings (``Config.online``).

Every sampling method runs one loop (:mod:`alignkit.train.sampling`): sample K
responses per prompt, score them with the reward, **select**, fine-tune. The
methods differ only in the select step (one function each in :data:`SELECTORS`)
and in the loss of the update (``sft`` or a name in ``alignkit.losses.LOSSES``).

A selector receives the stage's :class:`~alignkit.train.candidates.Candidates` whole:
B prompts with up to K candidates each, their texts, token ids and sources, and
``[B, K]`` tensors: ``scores`` (the ranking score: the reward, or RAFT eq. 5 with
``online.kl_beta``), ``mask`` (False where a prompt has fewer candidates, e.g.
dataset responses, or where the filter hook removed one) and, when computed, the
log-probs. A selection is a list of :class:`Item`: one training example made of some
candidates of one prompt, with preference scores (higher is better) or ``None`` for SFT.

Everything here is pure (tensors and numbers in, indices out), so each select
step is tested by hand in ``tests/train/test_selection.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from alignkit.config.sampling import OnlineConfig
from alignkit.errors import ConfigError
from alignkit.train.candidates import Candidates


@dataclass
class Item:
    """One training example: candidates ``indices`` of prompt ``row``, with preference ``scores`` (None: SFT)."""

    row: int
    indices: list[int]
    scores: list[float] | None = None


class UniformRNG(Protocol):
    def random(self) -> float: ...


# ---------------------------------------------------------------- building blocks


def kl_regularised(rewards: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """RAFT eq. 5: rank by ``r(x, y) - beta * log(pi(y|x) / pi_ref(y|x))``, all ``[B, K]``."""
    return rewards - beta * (logps - ref_logps)


def local_ranking(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep ``[B, K]``: the best valid candidate of each prompt (the first of equals); none for an empty row."""
    masked = scores.masked_fill(~mask, -math.inf)
    keep = torch.zeros_like(mask)
    rows = mask.any(dim=1).nonzero().flatten()
    keep[rows, masked[rows].argmax(dim=1)] = True  # argmax returns the first maximum
    return keep


def global_ranking(scores: torch.Tensor, mask: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Keep ``[B, K]``: the ``n_keep`` best valid candidates over all prompts (ties: the earlier in row order)."""
    flat = scores.masked_fill(~mask, -math.inf).flatten()
    order = torch.sort(-flat, stable=True).indices[: min(n_keep, int(mask.sum()))]
    keep = torch.zeros(flat.shape, dtype=torch.bool)
    keep[order] = True
    return keep.view(mask.shape)


def best_and_worst(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices ``[B]`` of the best and the worst valid candidate (first of equals), and whether they differ in score."""
    best = scores.masked_fill(~mask, -math.inf).argmax(dim=1)
    worst = scores.masked_fill(~mask, math.inf).argmin(dim=1)
    rows = torch.arange(len(scores))
    differ = mask.any(dim=1) & (scores[rows, best] > scores[rows, worst])
    return best, worst, differ


def rso_accept(rewards: Sequence[float], num_accepted: int, beta: float, rng: UniformRNG) -> list[int]:
    """Statistical rejection sampling, RSO Algorithm 1 (Liu et al. 2023, arXiv 2309.06657).

    Draws from pi_r(y|x) ∝ pi_sft(y|x) exp(r(x, y) / beta) given candidates sampled from
    pi_sft: in rounds over the remaining candidates (in order), candidate y is accepted
    when ``u < exp((r(y) - r_max) / beta)``, u ~ U[0, 1) and r_max the best remaining
    reward; accepted ones are removed after the round (sampling without replacement).
    Stops at ``num_accepted`` or when no candidate is left. Returns accepted indices in
    acceptance order. Each round accepts at least the best remaining one (u < 1).
    """
    remaining = list(range(len(rewards)))
    accepted: list[int] = []
    while remaining and len(accepted) < num_accepted:
        r_max = max(rewards[i] for i in remaining)
        taken = []
        for i in remaining:
            if rng.random() >= math.exp((rewards[i] - r_max) / beta):
                continue
            accepted.append(i)
            taken.append(i)
            if len(accepted) == num_accepted:
                break
        remaining = [i for i in remaining if i not in taken]
    return accepted


def random_pairs(indices: Sequence[int], rng) -> list[tuple[int, int]]:
    """Disjoint pairs of a shuffled copy of ``indices`` (an odd one out is dropped); ``rng`` is a ``random.Random``."""
    shuffled = list(indices)
    rng.shuffle(shuffled)
    return [(shuffled[i], shuffled[i + 1]) for i in range(0, len(shuffled) - 1, 2)]


def filter_mask(fn: Callable, prompts: list[str], responses: list[str], scores: list[float]) -> torch.Tensor:
    """The user's keep mask ``[N]`` bool from ``fn(prompts, responses, scores)`` (a sequence of N truthy values)."""
    keep = fn(prompts, responses, scores)
    keep = torch.as_tensor(list(keep) if not isinstance(keep, torch.Tensor) else keep).bool().flatten()
    if keep.numel() != len(responses):
        raise ValueError(f"the filter returned {keep.numel()} values for {len(responses)} responses")
    return keep


# ---------------------------------------------------------------- the select step of each method

Selector = Callable[[Candidates, OnlineConfig, Any], list[Item]]
CheckFn = Callable[[OnlineConfig, str], None]


@dataclass(frozen=True)
class SelectorSpec:
    """A sampling method: its select step and what the trainer needs to know about it."""

    name: str
    select: Selector  # (candidates, online config, seeded random.Random) -> items
    default_update: str  # the update when online.loss is empty: sft or a loss of alignkit.losses.LOSSES
    reference: Literal["initial", "previous"] = "initial"  # pi_ref under online.reference: auto
    check: CheckFn | None = None  # (online config, update name): raise ConfigError naming the key
    paper: str = ""  # where the method comes from, shown by `alignkit methods`


SELECTORS: dict[str, SelectorSpec] = {}


def register_selector(name: str, *, default_update: str, reference: Literal["initial", "previous"] = "initial",
                      check: CheckFn | None = None, paper: str = "") -> Callable[[Selector], Selector]:
    """Register the decorated select step as sampling method ``name`` (a method of ``alignkit train``)."""
    def wrap(fn: Selector) -> Selector:
        if name in SELECTORS:
            raise ValueError(f"selector {name!r} registered twice")
        SELECTORS[name] = SelectorSpec(name, fn, default_update, reference, check, paper)
        return fn

    return wrap


def _sft_only(cfg: OnlineConfig, update: str) -> None:
    if update != "sft":
        raise ConfigError("online.loss: raft fine-tunes on one kept response per example with sft; "
                          "use method: online or iterative_dpo for a preference loss")


def _rso_settings(cfg: OnlineConfig, update: str) -> None:
    if cfg.rso_beta <= 0 or cfg.rso_num_accepted < 2:
        raise ConfigError("online.rso_beta must be > 0 and online.rso_num_accepted >= 2")


@register_selector("raft", default_update="sft", check=_sft_only)
def select_raft(candidates: Candidates, cfg: OnlineConfig, rng) -> list[Item]:
    """RAFT (Dong et al. 2023, arXiv 2304.06767): the best response per prompt (local ranking), or the
    top 1/K of all B x K samples (global ranking); each kept response is one SFT example."""
    scores, mask = candidates.scores, candidates.mask
    if cfg.ranking == "local":
        keep = local_ranking(scores, mask)
    else:
        keep = global_ranking(scores, mask, math.ceil(int(mask.sum()) / max(scores.shape[1], 1)))
    return [Item(b, [k]) for b, k in keep.nonzero().tolist()]


@register_selector("rso", default_update="dpo", check=_rso_settings)
def select_rso(candidates: Candidates, cfg: OnlineConfig, rng) -> list[Item]:
    """RSO: accept ``rso_num_accepted`` samples of each prompt by rejection sampling (:func:`rso_accept`),
    pair them at random and label each pair by the reward (equal rewards make no pair)."""
    scores, mask = candidates.scores, candidates.mask
    items = []
    for b in range(len(scores)):
        valid = mask[b].nonzero().flatten().tolist()
        values = scores[b].tolist()
        chosen = rso_accept([values[k] for k in valid], cfg.rso_num_accepted, cfg.rso_beta, rng)
        for i, j in random_pairs([valid[c] for c in chosen], rng):
            if values[i] != values[j]:
                better, worse = (i, j) if values[i] > values[j] else (j, i)
                items.append(Item(b, [better, worse], [values[better], values[worse]]))
    return items


@register_selector("online", default_update="rrhf")
def select_ranked(candidates: Candidates, cfg: OnlineConfig, rng) -> list[Item]:
    """Online RRHF / PRO / listwise DPO: all candidates of a prompt, ranked by their scores (a prompt whose
    candidates all tie carries no preference and is skipped)."""
    scores, mask = candidates.scores, candidates.mask
    items = []
    for b in range(len(scores)):
        valid = mask[b].nonzero().flatten().tolist()
        values = [float(scores[b, k]) for k in valid]
        if len(set(values)) > 1:
            items.append(Item(b, valid, values))
    return items


@register_selector("iterative_dpo", default_update="dpo", reference="previous")
def select_best_worst(candidates: Candidates, cfg: OnlineConfig, rng) -> list[Item]:
    """Iterative online DPO (Dong et al. 2024, arXiv 2405.07863): the best and the worst response of each
    prompt as (chosen, rejected); a prompt whose candidates all tie is skipped."""
    scores, mask = candidates.scores, candidates.mask
    best, worst, differ = best_and_worst(scores, mask)
    return [Item(b, [int(best[b]), int(worst[b])], [1.0, 0.0]) for b in differ.nonzero().flatten().tolist()]


def _dataset_and_policy(cfg: OnlineConfig, update: str) -> None:
    if "dataset" not in cfg.sources or "policy" not in cfg.sources:
        raise ConfigError(f"online.sources: spin pairs the data's response with the policy's sample; "
                          f"give both dataset and policy, got {cfg.sources}")


@register_selector("spin", default_update="dpo", reference="previous", check=_dataset_and_policy)
def select_spin(candidates: Candidates, cfg: OnlineConfig, rng) -> list[Item]:
    """SPIN (Chen et al. 2024, arXiv 2401.01335): the data's own response (chosen) against the current
    policy's sample (rejected), with the previous iterate as the reference of the DPO-like update. Reads
    the candidates' ``sources``, not their scores: the first valid dataset and policy candidate of each
    prompt; a prompt missing either is skipped."""
    items = []
    for b, sources in enumerate(candidates.sources):
        valid = [k for k in range(len(sources)) if candidates.mask[b, k]]
        human = [k for k in valid if sources[k] == "dataset"]
        sampled = [k for k in valid if sources[k] == "policy"]
        if human and sampled:
            items.append(Item(b, [human[0], sampled[0]], [1.0, 0.0]))
    return items
