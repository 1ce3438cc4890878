"""Fine-grained reward models: one error / no-error prediction per segment of a response.

Fine-Grained RLHF (Wu et al. 2023, sec. 4.1 and appendix D) trains, per error category,
a token classifier that reads ``context + answer`` and predicts at one token of each
segment whether the segment has an error of its category; the reward of segment j is
``ok_reward`` (paper: +1) without a predicted error and ``error_reward`` (-1) with one,
placed at the segment's end. The paper inserts a separator token before each segment and
classifies it; alignkit classifies the segment's own last token (no vocabulary change,
so any encoder or decoder checkpoint works as it is).

:class:`SpanRewardModel` wraps ``AutoModelForTokenClassification`` with two labels (0: no
error, 1: error). Inputs are the tokenizer's own text-pair encoding of (context, answer)
(``[CLS] context [SEP] answer [SEP]`` for BERT-like encoders), truncated so that a long
context loses its end (the question and first passages stay) and the answer stays whole;
only an answer longer than ``max_length`` on its own is cut too. The last token of a
segment is the last answer token that starts before the segment's end character (fast-tokenizer offsets); a segment cut away by truncation
has no position and no prediction.

A folder written by :func:`save_span_reward_model` is a Hugging Face checkpoint plus
``alignkit_span_reward.json`` (level, categories, max_length, context_lines, the two reward values and the decision
threshold on p(error), chosen on validation questions when the model was trained with some).
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignkit.errors import AlignkitError

SPAN_CONFIG = "alignkit_span_reward.json"
NUM_LABELS = 2  # 0: no error, 1: an error of the model's categories


@dataclass
class SpanModelInfo:
    """What a fine-grained reward model predicts, saved beside its weights."""

    level: str = "sub_sentence"  # segments: sentence or sub_sentence (alignkit.data.spans)
    categories: list[str] = field(default_factory=list)  # the error types the model detects
    max_length: int = 512  # context + answer tokens
    context_lines: int = 0  # the model reads only the prompt's first lines (0: all of it)
    error_reward: float = -1.0  # reward of a segment predicted to have an error
    ok_reward: float = 1.0  # reward of a segment predicted to have none
    threshold: float = 0.5  # a segment is predicted to have an error when p(error) exceeds it


def predicted_errors(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[M, 2]`` segment logits -> ``[M]`` bool: p(error) = softmax(logits)[:, 1] > ``threshold``
    (at 0.5, the argmax with ties going to "no error")."""
    return logits.float().softmax(-1)[:, 1] > threshold


class SpanRewardModel(nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids]) -> logits [N, T, 2]`` (fp32)."""

    def __init__(self, model: nn.Module, info: SpanModelInfo):
        super().__init__()
        self.model = model  # an AutoModelForTokenClassification with 2 labels
        self.info = info

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.float()


def _encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int):
    """One (context, answer) pair encoding of at most ``max_length`` tokens, with offsets.

    The context alone is cut (from its end) whenever the whole answer fits: the answer holds
    the segments being judged. Only an answer too long on its own loses its end as well.
    """
    answer_tokens = len(tokenizer(response, add_special_tokens=False)["input_ids"])
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - answer_tokens
    strategy = "only_first" if room >= 1 else "longest_first"  # the context keeps a token at least
    return tokenizer(prompt, response, truncation=strategy, max_length=max_length, return_offsets_mapping=True)


def encode_segments(tokenizer: Any, prompts: list[str], responses: list[str], ends: list[list[int]],
                    max_length: int) -> tuple[dict[str, torch.Tensor], list[list[int | None]]]:
    """The right-padded pair encoding ``[N, T]`` and, per response, the token index ending each segment.

    ``ends[i][j]``: the exclusive end character of segment j of ``responses[i]``. Its
    position is the last answer token starting before it, or None when truncation cut it.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise AlignkitError(f"fine-grained reward models need a fast tokenizer (offsets); "
                            f"{type(tokenizer).__name__} is not one")
    encodings = [_encode_pair(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encodings[0]]
    width = max(len(e["input_ids"]) for e in encodings)
    pad = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    batch = {k: torch.tensor([e[k] + [pad[k]] * (width - len(e[k])) for e in encodings], dtype=torch.long)
             for k in keys}  # (N, T)
    positions = []
    for enc, seg_ends in zip(encodings, ends):
        answer = [(t, a, b) for t, (s, (a, b)) in enumerate(zip(enc.sequence_ids(), enc["offset_mapping"]))
                  if s == 1 and b > a]
        starts = [a for _, a, _ in answer]
        kept_end = answer[-1][2] if answer else 0
        row = []
        for end in seg_ends:
            k = bisect_left(starts, end) - 1  # the last answer token starting before `end`
            row.append(answer[k][0] if k >= 0 and kept_end >= end else None)
        positions.append(row)
    return batch, positions


def model_context(prompt: str, context_lines: int) -> str:
    """What the model reads of ``prompt``: its first ``context_lines`` lines, or all of it at 0.

    For qa-feedback prompts the first line is ``question: ...``: the context of the paper's
    relevance model, which reads no passages (its ``--ignore_context``).
    """
    return "\n".join(prompt.split("\n")[:context_lines]) if context_lines > 0 else prompt


def segment_logits(model: SpanRewardModel, tokenizer: Any, prompts: list[str], responses: list[str],
                   ends: list[list[int]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Logits ``[M, 2]`` at the M segment ends that survived truncation, and their (response, segment)."""
    prompts = [model_context(p, model.info.context_lines) for p in prompts]
    batch, positions = encode_segments(tokenizer, prompts, responses, ends, model.info.max_length)
    logits = model(**{k: v.to(model.device) for k, v in batch.items()})  # (N, T, 2)
    index = [(i, j) for i, row in enumerate(positions) for j, t in enumerate(row) if t is not None]
    rows = torch.tensor([i for i, _ in index], dtype=torch.long, device=logits.device)
    cols = torch.tensor([positions[i][j] for i, j in index], dtype=torch.long, device=logits.device)
    return logits[rows, cols], index  # (M, 2)


def load_span_reward_model(path_or_id: str | os.PathLike, info: SpanModelInfo | None = None,
                           init_from_base: bool = False) -> tuple[SpanRewardModel, Any]:
    """A fine-grained reward model and its tokenizer (safetensors only).

    A folder saved by :func:`save_span_reward_model` brings its :class:`SpanModelInfo`. Any
    other checkpoint (``minilm``, a Hub id, a base encoder) gets a fresh 2-label head and
    ``info``, which is only allowed with ``init_from_base`` (the start of training).
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from alignkit.models.reward_model import _fetch, _load_error, resolve_model_path

    source = resolve_model_path(path_or_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        meta_path = _fetch(source, SPAN_CONFIG)
    except (OSError, ValueError) as e:
        raise _load_error(path_or_id, source, e) from None
    if meta_path:
        info = SpanModelInfo(**json.loads(Path(meta_path).read_text()))
    elif not init_from_base:
        raise AlignkitError(f"fine-grained reward model {os.fspath(path_or_id)!r} has no {SPAN_CONFIG}: it is not "
                            "a trained fine-grained reward model; train one with method span_reward_model")
    try:
        model = AutoModelForTokenClassification.from_pretrained(source, num_labels=NUM_LABELS, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise _load_error(path_or_id, source, e) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return SpanRewardModel(model, info or SpanModelInfo()).eval(), tokenizer


def save_span_reward_model(model: SpanRewardModel, tokenizer: Any, out_dir: str | os.PathLike,
                           state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save so that :func:`load_span_reward_model` restores it; ``state_dict``: gathered FSDP weights."""
    from alignkit.models.loading import sub_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.model.save_pretrained(out, state_dict=sub_state_dict(state_dict, "model."))
    tokenizer.save_pretrained(out)
    (out / SPAN_CONFIG).write_text(json.dumps(asdict(model.info), indent=2) + "\n")
    return out
