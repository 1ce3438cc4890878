"""A fine-grained reward model as a dense :class:`~alignkit.rewards.base.Reward` (kind ``span_model``).

Fine-Grained RLHF (Wu et al. 2023, eq. 1): each response is cut into the segments the
model was trained on (its saved level: sentences or sub-sentences, :mod:`alignkit.data.spans`);
the model predicts error / no error at each segment's last token (p(error) above its saved
threshold), and the segment's reward
is the model's ``error_reward`` (paper: -1) or ``ok_reward`` (+1), placed at the
segment's end character. PPO maps that end onto the policy's own tokens as it does for
every dense reward (:func:`alignkit.train.rollout.segments_to_tokens`); a mix weighs it
(``weight``: the paper's w_k). ``score()`` is the sum of the segment rewards.

:meth:`SpanModelReward.score_with_details` also gives each response's ``error_rate`` (the
share of its segments predicted to have an error): the per-category error rates that the
paper's evaluation reports, shown by ``alignkit eval`` and ``alignkit compare``.
A response without any segment (empty or whitespace) gets one zero segment at its end;
a segment cut away by truncation gets no reward and does not count in the error rate.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from alignkit.models.span_model import (
    SpanRewardModel,
    load_span_reward_model,
    predicted_errors,
    segment_logits,
)
from alignkit.rewards.base import Reward, Segment, check_batch, sum_segments


class SpanModelReward(Reward):
    """Dense rewards from a :class:`~alignkit.models.span_model.SpanRewardModel` (load with :meth:`from_path`)."""

    dense = True

    def __init__(self, model: SpanRewardModel, tokenizer: Any, name: str = "span_model", batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name, self.batch_size = name, batch_size

    @classmethod
    def from_path(cls, path: str | os.PathLike, device: str | torch.device | None = None, **kwargs: Any):
        """Load a model saved by ``method: span_reward_model`` onto ``device`` (CUDA when available)."""
        model, tokenizer = load_span_reward_model(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, **kwargs)

    @torch.no_grad()
    def predict(self, prompts: list[str], responses: list[str]) -> list[list[tuple[int, bool | None]]]:
        """Per response, ``(end, has_error)`` per segment; ``has_error`` None when truncation cut it."""
        from alignkit.data.spans import segment

        check_batch(prompts, responses)
        ends = [[end for _, end in segment(r, self.model.info.level)] for r in responses]
        errors: list[list[bool | None]] = [[None] * len(e) for e in ends]
        for start in range(0, len(responses), self.batch_size):
            stop = start + self.batch_size
            if not any(ends[start:stop]):
                continue
            logits, index = segment_logits(self.model, self.tokenizer, prompts[start:stop], responses[start:stop],
                                           ends[start:stop])
            for (i, j), error in zip(index, predicted_errors(logits, self.model.info.threshold).tolist()):
                errors[start + i][j] = error
        return [list(zip(e, err)) for e, err in zip(ends, errors)]

    def _segments(self, responses: list[str], predicted) -> list[list[Segment]]:
        info = self.model.info
        out = []
        for response, segs in zip(responses, predicted):
            values = [(end, info.error_reward if err else info.ok_reward) for end, err in segs if err is not None]
            out.append(values or [(len(response), 0.0)])
        return out

    def score_segments(self, prompts: list[str], responses: list[str]) -> list[list[Segment]]:
        return self._segments(responses, self.predict(prompts, responses))

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return sum_segments(self.score_segments(prompts, responses))

    def score_with_details(self, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, dict]:
        """The score ``[N]`` and ``{"error_rate": [N]}`` (0 for a response without segments)."""
        predicted = self.predict(prompts, responses)
        rates = []
        for segs in predicted:
            judged = [err for _, err in segs if err is not None]
            rates.append(sum(judged) / len(judged) if judged else 0.0)
        scores = sum_segments(self._segments(responses, predicted))
        return scores, {"error_rate": torch.tensor(rates, dtype=torch.float32)}
