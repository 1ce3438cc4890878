"""Pairwise preference models: P(y beats y' | x) from a cross-encoder that reads both responses.

A reward model scores each response alone; a preference model reads the prompt and BOTH
responses in one sequence, ``prompt [SEP] y [SEP] y'`` (``[CLS]`` first and ``[SEP]`` last
for an encoder; a decoder gets ``prompt y <separator text> y' EOS``). A scalar head on the
model's body gives a score for every token, and the comparison reads each response where it
is, as PairRM reads its candidates' own positions (Jiang et al. 2023, arXiv 2306.02561):

    f(x, y, y') = mean score over y's tokens - mean score over y''s tokens
    g(x, y, y') = (f(x, y, y') - f(x, y', y)) / 2,     P(y > y' | x) = sigmoid(g(x, y, y'))

so ``P(y > y') = 1 - P(y' > y)`` exactly, and ``P(y > y) = 1/2``. Why not a sequence
classifier's ``[CLS]`` readout: both orders hold the same tokens, and MiniLM's pooled ``[CLS]``
barely depends on their order (on HH-RLHF pairs at init, the two orders' pooled vectors differ
by 0.06 in norm, chosen against rejected alone by 0.36), so g starts near 0 and stayed there:
trained on HH harmless it did not leave chance. Reading each response's own tokens starts
where a Bradley-Terry reward model starts (each response scored in context) and lets the two
see each other. Trained with the logistic loss ``-log sigmoid(g(x, y_w, y_l))`` over every
ordered pair of a row (ranked data: all pairs with a strict preference),
:func:`~alignkit.losses.reward.preference_model_loss`.

Saved as a reward-model checkpoint of the body-and-scalar-head kind (``causal`` in
:mod:`~alignkit.models.reward_model`, whatever the body: MiniLM, any encoder or decoder) plus
``alignkit_preference.json``, the mark that it compares two responses (a reward kind ``model``
refuses it; ``preference_model`` needs it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from alignkit.errors import AlignkitError
from alignkit.models.reward_model import LENGTH_CHUNK, RewardModel, load_reward_model, save_reward_model

PREFERENCE_CONFIG = "alignkit_preference.json"
READOUT = "response_token_means"  # how f reads the model: recorded in PREFERENCE_CONFIG, checked on load
TEXT_SEPARATOR = "\n\n===\n\n"  # between the two responses for a tokenizer without a separator token
MODEL_KIND = "causal"  # the body plus a per-token scalar head (reward_model.py's name for it, also for encoders)


def _layout(tokenizer: Any) -> tuple[list[int], list[int], list[int], list[int]]:
    """Token ids (before the prompt, between prompt and y, between y and y', after y') of the layout."""
    if tokenizer.sep_token_id is not None:
        cls = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
        return cls, [tokenizer.sep_token_id], [tokenizer.sep_token_id], [tokenizer.sep_token_id]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    between = tokenizer(TEXT_SEPARATOR, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [bos] if adds_bos else [], [], between, eos


def encode_comparisons(tokenizer: Any, prompts: list[str], first: list[str], second: list[str],
                       max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize ``(prompt, first response, second response)`` triples as right-padded ``[N, T]`` batches.

    Returns ``input_ids``, ``attention_mask`` and ``first_mask`` / ``second_mask`` (bool, the tokens
    of each response). Within ``max_length``: each response keeps its first ``budget // 3`` tokens
    (budget: ``max_length`` less the special tokens), so that both are always seen, and the prompt
    its *last* tokens in the room left (the end of a prompt is the question being answered).
    """
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"{len(prompts)} prompts, {len(first)} first and {len(second)} second responses")
    before, after_prompt, between, after = _layout(tokenizer)
    budget = max_length - len(before) - len(after_prompt) - len(between) - len(after)
    if budget < 3:
        raise AlignkitError(f"preference model max_length={max_length} leaves no room for a prompt and two "
                            f"responses next to {max_length - budget} special tokens; raise reward_model.max_length")
    share = budget // 3
    ids = [tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
           for texts in (prompts, first, second)]
    rows, spans = [], []
    for p, a, b in zip(*ids):
        a, b = a[:share], b[:share]
        keep = min(len(p), budget - len(a) - len(b))
        head = before + p[len(p) - keep :] + after_prompt
        rows.append(head + a + between + b + after)
        spans.append((len(head), len(head) + len(a), len(head) + len(a) + len(between)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max((len(row) for row in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, T)
    first_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # (N, T)
    second_mask = torch.zeros((len(rows), width), dtype=torch.bool)  # (N, T)
    for i, (row, (a0, a1, b0)) in enumerate(zip(rows, spans)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
        first_mask[i, a0:a1] = True
        second_mask[i, b0 : len(row) - len(after)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "first_mask": first_mask,
            "second_mask": second_mask}


def _span_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` ``[N, T]`` over ``mask`` ``[N, T]`` per row ``[N]``; 0 for an empty response."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def _scores(model: RewardModel, tokenizer: Any, prompts: list[str], first: list[str], second: list[str],
            max_length: int) -> torch.Tensor:
    """``f(x, first, second)`` ``[N]`` fp32: the mean token score of ``first`` minus that of ``second``."""
    if model.kind != MODEL_KIND:
        raise AlignkitError(f"a preference model reads a score at every token (a body with a scalar head, reward "
                            f"model kind {MODEL_KIND!r}), not a {model.kind!r} reward model's one score")
    batch = encode_comparisons(tokenizer, prompts, first, second, max_length)
    lengths = batch["attention_mask"].sum(1)  # (N,)
    # as reward_logits: length-sorted chunks, each padded to its own longest (HH-RLHF at 256 tokens: a
    # third of a batch padded to its longest row is padding)
    order = torch.argsort(lengths, stable=True)
    parts = []
    for idx in order.split(LENGTH_CHUNK):
        chunk = {k: v[idx, : int(lengths[idx].max())].to(model.device) for k, v in batch.items()}
        values = model.model(chunk["input_ids"], chunk["attention_mask"]).float()  # (n, t)
        parts.append(_span_mean(values, chunk["first_mask"]) - _span_mean(values, chunk["second_mask"]))
    return torch.cat(parts)[torch.argsort(order).to(model.device)]  # (N,), back in the callers' order


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
    (out / PREFERENCE_CONFIG).write_text(json.dumps({"max_length": model.max_length, "antisymmetric": True,
                                                     "readout": READOUT}) + "\n")
    return out


def is_preference_model(path: str | os.PathLike) -> bool:
    return (Path(path) / PREFERENCE_CONFIG).is_file()


def load_preference_model(path: str | os.PathLike) -> tuple[RewardModel, Any]:
    """A model saved by :func:`save_preference_model` and its tokenizer; anything else is an error."""
    if not is_preference_model(path):
        raise AlignkitError(f"preference model {os.fspath(path)!r}: no {PREFERENCE_CONFIG} there; train one with "
                            "`method: preference_model` (a reward model scores one response and cannot compare two)")
    readout = json.loads((Path(path) / PREFERENCE_CONFIG).read_text()).get("readout")
    if readout != READOUT:
        raise AlignkitError(f"preference model {os.fspath(path)!r} reads {readout or 'its [CLS] token'}, an older "
                            f"layout that did not learn on real data; retrain it with `method: preference_model`")
    return load_reward_model(path, init_from_base=False)
