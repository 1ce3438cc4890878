"""Settings of ``method: reward_model`` (kept apart so that the config imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RewardModelConfig:
    loss: Literal["kwise", "bradley_terry"] = "kwise"  # InstructGPT K-wise (all pairs) or pairwise Bradley-Terry
    kind: Literal["auto", "classifier", "causal"] = "auto"  # sequence classifier or causal LM + scalar head
    max_length: int = 512  # tokens of prompt + response seen by the model
    center_examples: int = 512  # training examples whose responses set the stored mean (0: no centering)


@dataclass
class SpanRewardModelConfig:
    """Settings of ``method: span_reward_model``, a fine-grained reward model (Wu et al. 2023, sec. 4.1)."""

    level: Literal["sentence", "sub_sentence"] = "sub_sentence"  # segments labelled and rewarded
    categories: list[str] = field(default_factory=list)  # error types counted as this model's errors
    min_span_words: int = 0  # drop error spans shorter than this many words (the paper: 5 for relevance)
    ignore_other_errors: bool = False  # leave out segments whose only errors are of other types (factuality)
    max_length: int = 512  # context + answer tokens (the context's end is cut first)
    error_reward: float = -1.0  # reward of a segment predicted to have an error
    ok_reward: float = 1.0  # reward of a segment predicted to have none
