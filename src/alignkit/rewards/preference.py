"""A trained pairwise preference model as a judge: ``kind: preference_model``.

A :class:`PreferenceJudge` compares two responses to one prompt instead of scoring one:
:meth:`PreferenceJudge.compare` gives ``P(a beats b | x)`` ``[N]`` (antisymmetric:
``compare(x, a, b) = 1 - compare(x, b, a)``, see :mod:`alignkit.models.preference_model`).
Where alignkit compares responses it asks a judge first and a reward otherwise
(:func:`win_probability`): ``eval``'s win rate (``judge: {kind: preference_model, path: ...}``),
Nash-MD's ``P(y > y')`` and the sampling methods' rankings (:meth:`PreferenceJudge.group_scores`).

A lone response has no score under a preference model, so :meth:`PreferenceJudge.score`
is an error that says where the judge can be used.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from alignkit.errors import ConfigError
from alignkit.rewards.base import Reward, check_batch


class PreferenceJudge(Reward):
    """Compares pairs with a model saved by ``method: preference_model`` (build one with :meth:`from_path`)."""

    def __init__(self, model, tokenizer: Any, name: str = "preference_model", batch_size: int = 32,
                 max_length: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.batch_size, self.max_length = batch_size, max_length or model.max_length

    @classmethod
    def from_path(cls, path: str | os.PathLike, device: str | torch.device | None = None, **kwargs) -> PreferenceJudge:
        from alignkit.models.preference_model import load_preference_model

        model, tokenizer = load_preference_model(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, **kwargs)

    @torch.no_grad()
    def logits(self, prompts: list[str], first: list[str], second: list[str]) -> torch.Tensor:
        """The log-odds ``g(x, a, b)`` ``[N]`` float32 on the CPU, in batches of ``batch_size``."""
        from alignkit.models.preference_model import preference_logits

        check_batch(prompts, first)
        check_batch(prompts, second)
        was_training = self.model.training
        self.model.eval()
        out = [preference_logits(self.model, self.tokenizer, prompts[i : i + self.batch_size],
                                 first[i : i + self.batch_size], second[i : i + self.batch_size],
                                 self.max_length).float().cpu()
               for i in range(0, len(prompts), self.batch_size)]
        self.model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> torch.Tensor:
        """``P(first beats second | prompt)`` ``[N]`` float32."""
        return torch.sigmoid(self.logits(prompts, first, second))

    def group_scores(self, prompt: str, responses: list[str]) -> list[float]:
        """Scores of a prompt's K responses whose differences are the judge's log-odds on average:
        ``s_k = 1/K sum_j g(x, y_k, y_j)`` (``g(x, y, y) = 0``). For K=2, ``s_0 - s_1 = g(x, y_0, y_1)``,
        so ``sigmoid(s_0 - s_1)`` is the judge's ``P(y_0 > y_1)``, as for a Bradley-Terry reward."""
        K = len(responses)
        pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
        g = self.logits([prompt] * len(pairs), [responses[i] for i, _ in pairs], [responses[j] for _, j in pairs])
        scores = [0.0] * K
        for (i, j), value in zip(pairs, g.tolist()):
            scores[i] += value / K
            scores[j] -= value / K
        return scores

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        raise ConfigError(f"reward {self.name!r} (kind preference_model) compares two responses and cannot score one "
                          "alone; use it as eval's `judge`, or as the reward of a sampling method "
                          "(nash_md, xpo, iterative_dpo, ...)")


def win_probability(judge: Reward, prompts: list[str], first: list[str], second: list[str]) -> torch.Tensor:
    """``P(first beats second)`` ``[N]``: a preference judge's own, else the Bradley-Terry probability
    ``sigmoid(r(first) - r(second))`` of a reward (TRL's Nash-MD convention for reward models)."""
    if isinstance(judge, PreferenceJudge):
        return judge.compare(prompts, first, second)
    return torch.sigmoid(judge.score(prompts, first).float() - judge.score(prompts, second).float())
