"""Pairwise preference models: P(y beats y' | x) from a cross-encoder that reads both responses.

A reward model scores each response alone; a preference model reads the prompt and BOTH
responses in one sequence, ``prompt [SEP] y [SEP] y'``, and its sequence classifier (any
:class:`~alignkit.models.reward_model.RewardModel`: MiniLM by default, or a causal LM with a
scalar head) gives one number ``f(x, y, y')``. Antisymmetry is by construction, both orders
are read and

    g(x, y, y') = (f(x, y, y') - f(x, y', y)) / 2,     P(y > y' | x) = sigmoid(g(x, y, y'))

so ``P(y > y') = 1 - P(y' > y)`` exactly, and ``P(y > y) = 1/2``. Trained with the logistic
loss ``-log sigmoid(g(x, y_w, y_l))`` over every ordered pair of a row (ranked data: all pairs
with a strict preference), :func:`~alignkit.losses.reward.preference_model_loss`.

Saved as a reward-model checkpoint (:func:`~alignkit.models.reward_model.save_reward_model`)
plus ``alignkit_preference.json``, the mark that it compares two responses (a reward kind
``model`` refuses it; ``preference_model`` needs it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from alignkit.errors import AlignkitError
from alignkit.models.reward_model import RewardModel, encode_pairs, load_reward_model, save_reward_model

PREFERENCE_CONFIG = "alignkit_preference.json"
TEXT_SEPARATOR = "\n\n===\n\n"  # between the two responses for a tokenizer without a separator token


def _cut(tokenizer: Any, texts: list[str], max_tokens: int) -> list[str]:
    """Each text cut to its first ``max_tokens`` tokens, at a token boundary of the text."""
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text if len(off) <= max_tokens else text[: off[max_tokens - 1][1]] if max_tokens else ""
            for text, off in zip(texts, offsets)]


def encode_comparisons(tokenizer: Any, prompts: list[str], first: list[str], second: list[str],
                       max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize ``(prompt, first response, second response)`` triples as ``[N, T]`` batches.

    Each response keeps its first ``max_length // 3`` tokens, so that both are always seen;
    they are joined by the tokenizer's separator token (``[SEP]`` for MiniLM), and the
    pair (prompt, joined responses) is encoded by
    :func:`~alignkit.models.reward_model.encode_pairs`, which keeps the joined responses
    whole and the end of the prompt in the room left.
    """
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"{len(prompts)} prompts, {len(first)} first and {len(second)} second responses")
    share = max(max_length // 3, 1)
    sep = f" {tokenizer.sep_token} " if tokenizer.sep_token else TEXT_SEPARATOR
    joined = [a + sep + b for a, b in zip(_cut(tokenizer, first, share), _cut(tokenizer, second, share))]
    return encode_pairs(tokenizer, prompts, joined, max_length)


def _scores(model: RewardModel, tokenizer: Any, prompts: list[str], first: list[str], second: list[str],
            max_length: int) -> torch.Tensor:
    batch = encode_comparisons(tokenizer, prompts, first, second, max_length)
    return model(**{k: v.to(model.device) for k, v in batch.items()})  # f(x, first, second), (N,)


def preference_logits(model: RewardModel, tokenizer: Any, prompts: list[str], first: list[str],
                      second: list[str], max_length: int | None = None) -> torch.Tensor:
    """``g(x, y, y') = (f(x, y, y') - f(x, y', y)) / 2`` ``[N]`` fp32: the log-odds that ``first`` beats
    ``second``, antisymmetric by construction. Both orders run in one forward of ``2N`` rows;
    gradients flow when the caller has them on (training)."""
    length = max_length or model.max_length
    n = len(prompts)
    both = _scores(model, tokenizer, prompts + prompts, first + second, second + first, length)  # (2N,)
    return (both[:n] - both[n:]) / 2


def save_preference_model(model: RewardModel, tokenizer: Any, out_dir: str | os.PathLike,
                          state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """A reward-model checkpoint (no centering: a preference has no offset) marked as a preference model."""
    out = save_reward_model(model, tokenizer, out_dir, center_mean=0.0, state_dict=state_dict)
    (out / PREFERENCE_CONFIG).write_text(json.dumps({"max_length": model.max_length, "antisymmetric": True}) + "\n")
    return out


def is_preference_model(path: str | os.PathLike) -> bool:
    return (Path(path) / PREFERENCE_CONFIG).is_file()


def load_preference_model(path: str | os.PathLike) -> tuple[RewardModel, Any]:
    """A model saved by :func:`save_preference_model` and its tokenizer; anything else is an error."""
    if not is_preference_model(path):
        raise AlignkitError(f"preference model {os.fspath(path)!r}: no {PREFERENCE_CONFIG} there; train one with "
                            "`method: preference_model` (a reward model scores one response and cannot compare two)")
    return load_reward_model(path, init_from_base=False)
