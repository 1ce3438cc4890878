"""Nash-MD and XPO as sampling methods: a select step and an update each, on the one sampling loop.

Both judge a policy sample against a second sample of the same prompt (the loop's
``online.sources`` gather them: :mod:`alignkit.train.sampling`), then take gradient steps:

- **Nash-MD** (Munos et al. 2023, arXiv 2312.00886): ``y ~ pi`` (source ``policy``) against
  ``y' ~ pi_mix``, the token-level geometric mixture ``pi^(1-m) pi_ref^m`` (source ``mixture``,
  ``m = online.mixture_coef``, :mod:`alignkit.engine.mixture`). The judge gives
  ``P(y > y')`` (a ``preference_model`` judge its own; a reward ``sigmoid(r(y) - r(y'))``, as
  TRL did), and the update ascends it with the KL to the starting policy
  (:func:`~alignkit.losses.nash_xpo.nash_md_loss`, ``beta`` in ``online.loss_args``).
  ``mixture_coef: 0`` makes ``y'`` a second sample of the policy itself: the self-play /
  online-IPO form (Calandriello et al. 2024 show online IPO's fixed point is the Nash
  equilibrium that Nash-MD approaches).
- **XPO** (Xie et al. 2024, arXiv 2405.21046): ``y ~ pi`` against ``y_ref ~ pi_ref`` (source
  ``reference``), the judge ranks them (a tie goes to the policy sample, as TRL), and the update is
  online DPO on the pair plus ``alpha * log pi(y_ref)``
  (:func:`~alignkit.losses.nash_xpo.xpo_loss`). With ``alpha: 0`` the update IS alignkit's DPO
  update (:class:`~alignkit.train.preference.PreferenceMethod` with ``dpo``) on the same pairs.

The i-th policy sample of a prompt is paired with the i-th sample of the other source
(``sampling.num_samples`` pairs per prompt). Pure select steps are tested by hand in
``tests/train/test_nash_xpo_training.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alignkit.data.schema import TokenizedExample
from alignkit.errors import ConfigError
from alignkit.losses.nash_xpo import nash_md_loss, xpo_loss
from alignkit.train.candidates import Candidates
from alignkit.train.selection import Item, register_selector
from alignkit.train.updates import register_update

NASH_MD_PAPER = "Munos et al. 2023 (Nash-MD, arXiv 2312.00886)"
XPO_PAPER = "Xie et al. 2024 (XPO, arXiv 2405.21046)"


def paired_candidates(candidates: Candidates, b: int, other: str) -> list[tuple[int, int]]:
    """``(policy index, other index)`` of prompt ``b``: the i-th valid policy candidate with the i-th of source ``other``."""
    valid = [k for k in range(len(candidates.sources[b])) if candidates.mask[b, k]]
    mine = [k for k in valid if candidates.sources[b][k] == "policy"]
    theirs = [k for k in valid if candidates.sources[b][k] == other]
    return list(zip(mine, theirs))


def _needs_sources(other: str, update: str, loss_fn):
    def check(cfg, update_name: str) -> None:
        if "policy" not in cfg.sources or other not in cfg.sources:
            raise ConfigError(f"online.sources: this method pairs a policy sample with a {other} sample; "
                              f"give both, e.g. online.sources: [policy, {other}] (got {cfg.sources})")
        if update_name != update:
            raise ConfigError(f"online.loss: this method's pairs are made for its own update {update!r}; "
                              f"leave online.loss empty or set it to {update}")
        _checked(dict(cfg.loss_args), loss_fn)  # its hyper-parameters, before any model loads
    return check


@register_selector("nash_md", default_update="nash_md", check=_needs_sources("mixture", "nash_md", nash_md_loss),
                   paper=NASH_MD_PAPER)
def select_nash_md(candidates: Candidates, cfg, rng) -> list[Item]:
    """Nash-MD: each policy sample with its mixture sample, scores ``[P(y > y'), 1 - P]`` where
    ``P = sigmoid(s(y) - s(y'))`` (for a ``preference_model`` judge and one sample per source, its own P)."""
    items = []
    for b in range(len(candidates)):
        for k_policy, k_mixture in paired_candidates(candidates, b, "mixture"):
            margin = float(candidates.scores[b, k_policy]) - float(candidates.scores[b, k_mixture])
            p = 0.5 * (1 + math.tanh(margin / 2))  # sigmoid(margin), without overflow at large margins
            items.append(Item(b, [k_policy, k_mixture], [p, 1 - p]))
    return items


@register_selector("xpo", default_update="xpo", check=_needs_sources("reference", "xpo", xpo_loss), paper=XPO_PAPER)
def select_xpo(candidates: Candidates, cfg, rng) -> list[Item]:
    """XPO: each policy sample with its reference sample as ``[chosen, rejected, y_ref]`` (scores
    ``[1, 0, 0]``): the policy's wins when it scores at least as high (TRL's tie rule). The third
    column repeats the reference sample for the exploration term; the update drops it from the pair."""
    items = []
    for b in range(len(candidates)):
        for k_policy, k_ref in paired_candidates(candidates, b, "reference"):
            policy_wins = float(candidates.scores[b, k_policy]) >= float(candidates.scores[b, k_ref])
            chosen, rejected = (k_policy, k_ref) if policy_wins else (k_ref, k_policy)
            items.append(Item(b, [chosen, rejected, k_ref], [1.0, 0.0, 0.0]))
    return items


# ---------------------------------------------------------------- the updates


def _token_logps(scorer, examples: Sequence[TokenizedExample], pad_id: int, share_prompt: bool):
    from alignkit.engine import collate, sequence_logps

    out = sequence_logps(scorer, collate(examples), pad_id=pad_id, share_prompt=share_prompt, per_token=True)
    return out.token_logps[:, 0], out.token_mask[:, 0]  # (B, L) of the one response


class NashMDMethod:
    """The Nash-MD step on examples ``[y, y']`` with scores ``[P(y > y'), 1 - P]``: only ``y`` (the policy
    sample) is scored, by the policy and by the stage's reference (the starting policy)."""

    def __init__(self, beta: float, pad_id: int, reference, share_prompt: bool):
        self.beta, self.pad_id, self.reference, self.share_prompt = beta, pad_id, reference, share_prompt

    def units(self, examples: Sequence[TokenizedExample]) -> float:
        return float(len(examples))

    def loss(self, module, examples: Sequence[TokenizedExample]):
        policy_samples = [TokenizedExample(ex.prompt_ids, ex.response_ids[:1]) for ex in examples]
        logps, mask = _token_logps(module, policy_samples, self.pad_id, self.share_prompt)  # (B, L)
        with torch.no_grad():
            ref_logps, _ = _token_logps(self.reference.scorer, policy_samples, self.pad_id, self.share_prompt)
        probability = torch.tensor([ex.scores[0] for ex in examples], device=logps.device)
        losses, metrics = nash_md_loss(logps, ref_logps.to(logps.device), mask, probability, beta=self.beta)
        return losses.sum(), {"loss": float(losses.detach().mean()), **{k: float(v) for k, v in metrics.items()}}


class XPOMethod:
    """The XPO step on examples ``[chosen, rejected, y_ref]``: alignkit's DPO update on the pair, plus
    ``alpha * log pi(y_ref)`` read from the pair's own log-probs (``y_ref`` is one of its columns)."""

    def __init__(self, beta: float, alpha: float, pad_id: int, reference, share_prompt: bool):
        from alignkit.train.preference import PreferenceMethod

        self.alpha, self.beta = alpha, beta
        self.dpo = PreferenceMethod("dpo", {"beta": beta}, pad_id, reference, share_prompt)

    def units(self, examples: Sequence[TokenizedExample]) -> float:
        return float(len(examples))

    @staticmethod
    def pairs(examples: Sequence[TokenizedExample]) -> tuple[list[TokenizedExample], torch.Tensor]:
        """The (chosen, rejected) examples and the column of each that holds ``y_ref`` ``[B]``."""
        pairs = [TokenizedExample(ex.prompt_ids, ex.response_ids[:2], ex.scores[:2], None, ex.source) for ex in examples]
        column = torch.tensor([0 if ex.response_ids[2] == ex.response_ids[0] else 1 for ex in examples])
        return pairs, column

    def loss(self, module, examples: Sequence[TokenizedExample]):
        pairs, column = self.pairs(examples)
        losses, metrics = xpo_loss(self.dpo.ranked_batch(module, pairs), column, beta=self.beta, alpha=self.alpha)
        return losses.sum(), {"loss": float(losses.detach().mean()), **{k: float(v) for k, v in metrics.items()}}


def _defaults(fn) -> dict:
    import inspect

    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


def _checked(hp: dict, fn) -> dict:
    from alignkit.losses.registry import RANGES

    out = {**_defaults(fn), **hp}
    for name, value in out.items():
        out[name] = float(value)
        RANGES[name].check(f"online.loss_args.{name}", out[name])
    return out


@register_update("nash_md", needs_reference=True, hyperparameters=lambda: _defaults(nash_md_loss))
def nash_md_update(hyperparameters: dict, pad_id: int, reference, share_prompt: bool):
    return NashMDMethod(_checked(hyperparameters, nash_md_loss)["beta"], pad_id, reference, share_prompt)


@register_update("xpo", needs_reference=True, hyperparameters=lambda: _defaults(xpo_loss))
def xpo_update(hyperparameters: dict, pad_id: int, reference, share_prompt: bool):
    hp = _checked(hyperparameters, xpo_loss)
    return XPOMethod(hp["beta"], hp["alpha"], pad_id, reference, share_prompt)
