"""Settings of ``method: reward_model`` (kept apart so that the config imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class RewardModelConfig:
    loss: Literal["kwise", "bradley_terry"] = "kwise"  # InstructGPT K-wise (all pairs) or pairwise Bradley-Terry
    kind: Literal["auto", "classifier", "causal"] = "auto"  # sequence classifier or causal LM + scalar head
    max_length: int = 512  # tokens of prompt + response seen by the model
    center_examples: int = 512  # training examples whose responses set the stored mean (0: no centering)
