"""One reward as written in a config: an entry of the ``rewards:`` list.

Kept apart from the reward classes (and free of torch) so that :mod:`alignkit.config`
can type-check it when a config is loaded. :func:`alignkit.rewards.build_reward`
turns specs into a :class:`~alignkit.rewards.base.Reward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class RewardSpec:
    kind: str = ""  # which reward: vader, length, function, model or span_model (the keys of alignkit.rewards.REWARDS)
    name: str = (
        ""  # display name in metrics; defaults to the kind (the function's name, the model folder's name)
    )
    weight: float = 1.0  # multiplier of this reward in the sum when several rewards are mixed
    path: str = ""  # kind=model: a folder saved by alignkit, a reward checkpoint, a Hub id, or 'minilm';
    # kind=span_model: a folder saved by method span_reward_model (dense: its own segments, granularity unused)
    function: str = ""  # kind=function: 'module:function' called as fn(prompts, responses)
    granularity: Literal["sequence", "sentence"] = (
        "sequence"  # 'sentence': dense per-sentence segments (vader)
    )
    unit: Literal["words", "chars"] = "words"  # kind=length: count whitespace-separated words or characters
    batch_size: int = 32  # kind=model, span_model: pairs per forward pass
    max_length: int | None = (
        None  # kind=model: prompt + response tokens; None: the length saved with the model
    )
