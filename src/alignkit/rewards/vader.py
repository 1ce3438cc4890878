"""VADER sentiment as a reward: the classic "make the continuation positive" task.

The score is VADER's compound polarity of the response in [-1, 1] (Hutto & Gilbert
2014; the ``vaderSentiment`` package); the prompt is ignored.

``granularity="sentence"`` makes it a real dense reward for the Fine-Grained RLHF
path: the response is split into sentences, each ending at ``.``, ``!`` or ``?``
(a run of them, e.g. ``"!!"``, stays with its sentence) or before a newline, and
each sentence is one segment whose value is that sentence's own compound score and
whose end is just past its last character. Whitespace-only pieces are skipped; a
response with no sentence gets one zero segment at its end. The split is naive
(``"Dr. Smith"`` is two sentences). The dense ``score()`` is the sum of the
sentence compounds, which is *not* the compound of the whole text.
"""

from __future__ import annotations

import functools
import re

import torch

from alignkit.rewards.base import Reward, Segment, check_batch, sum_segments

# a sentence: text up to a run of . ! ?, or text up to a newline or the end
SENTENCE = re.compile(r"[^.!?\n]*[.!?]+|[^.!?\n]+")


@functools.lru_cache(maxsize=1)
def _analyzer():
    """One SentimentIntensityAnalyzer per process (it loads its lexicon once)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    """VADER's compound polarity of ``text``, in [-1, 1]."""
    return float(_analyzer().polarity_scores(text)["compound"])


def sentence_segments(text: str) -> list[Segment]:
    """``(end, compound)`` for each sentence of ``text`` (see the module doc for the split)."""
    segments = [(m.end(), compound(m.group().strip())) for m in SENTENCE.finditer(text) if m.group().strip()]
    return segments or [(len(text), 0.0)]


class VaderReward(Reward):
    """VADER compound sentiment of the response; dense per sentence with ``granularity="sentence"``."""

    def __init__(self, granularity: str = "sequence", name: str = "vader"):
        if granularity not in ("sequence", "sentence"):
            raise ValueError(f"unknown granularity {granularity!r}; expected 'sequence' or 'sentence'")
        self.name = name
        self.granularity = granularity
        self.dense = granularity == "sentence"

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        check_batch(prompts, responses)
        if self.dense:
            return sum_segments(self.score_segments(prompts, responses))
        return torch.tensor([compound(r) for r in responses], dtype=torch.float32)

    def score_segments(self, prompts: list[str], responses: list[str]) -> list[list[Segment]]:
        check_batch(prompts, responses)
        if not self.dense:
            return super().score_segments(prompts, responses)
        return [sentence_segments(r) for r in responses]
