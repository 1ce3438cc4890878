"""Reward settings: an entry of the ``rewards:`` list (turned into a reward by
:func:`alignkit.rewards.build_reward`) and the ``reward_model:`` section (``method: reward_model``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RewardSpec:
    kind: str = ""  # which reward: vader, length, function, model, span_model, preference_model (a judge of two responses) or min (the keys of alignkit.rewards.REWARDS)
    name: str = (
        ""  # display name in metrics; defaults to the kind (the function's name, the model folder's name)
    )
    weight: float = 1.0  # multiplier of this reward in the sum when several rewards are mixed
    path: str = ""  # kind=model: a folder saved by alignkit, a reward checkpoint, a Hub id, or 'minilm';
    # kind=span_model: a folder saved by method span_reward_model (dense: its own segments, granularity unused);
    # kind=min: the final/ folder of method maxmin_reward_models (its group_0, group_1, ... reward models)
    function: str = ""  # kind=function: 'module:function' called as fn(prompts, responses)
    granularity: Literal["sequence", "sentence"] = (
        "sequence"  # 'sentence': dense per-sentence segments (vader)
    )
    unit: Literal["words", "chars"] = "words"  # kind=length: count whitespace-separated words or characters
    batch_size: int = 32  # kind=model, span_model: pairs per forward pass
    max_length: int | None = (
        None  # kind=model: prompt + response tokens; None: the length saved with the model
    )
    over: Literal["batch", "sample"] = "batch"  # kind=min: the group with the lowest batch mean (MaxMin-RLHF) or the min per sample
    scale: Literal["std", "none"] = "std"  # kind=min: compare groups in units of each reward's std over its training responses (a Bradley-Terry scale follows how deterministic a group's labels are, not its stake), or raw ('none', the paper's comparison)


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
    max_length: int = 512  # context + answer tokens (the context's end is cut; the answer stays whole if it fits)
    context_lines: int = 0  # read only the prompt's first N lines (0: all; 1: the qa question, no passages)
    error_reward: float = -1.0  # reward of a segment predicted to have an error
    ok_reward: float = 1.0  # reward of a segment predicted to have none
    error_weight: float = 1.0  # cross-entropy weight of error segments (above 1 when errors are the minority)
    validation_size: float = 0.0  # training questions (a fraction when below 1) held out to choose the
    # p(error) threshold of the most accurate predictions; 0 keeps 0.5


@dataclass
class MixtureConfig:
    """Settings of ``method: maxmin_reward_models``: MaxMin-RLHF's EM for a mixture of reward models
    (Chakraborty et al. 2024, arXiv 2402.08925, Algorithm 1). The reward models themselves follow the
    ``reward_model:`` section (kind, max_length, loss, centering)."""

    num_groups: int = 2  # H: reward models in the mixture, one per (unknown) group of annotators
    em_iterations: int = 5  # at most this many E/M rounds; EM stops earlier when no assignment changes
    init_steps: int = 60  # optimizer steps of the pooled reward model on all data (EM's start; saved as pooled/)
    m_step_steps: int = 30  # optimizer steps refitting each group's reward model per round (from its last fit)
