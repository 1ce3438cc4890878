"""The prompts of a sampling-based run (RAFT, RSO, online ranking losses, iterative DPO): the draw of each
stage, and tokenization that scales with the stages, not the file.

Stage ``n`` draws ``online.prompts_per_stage`` prompts of ``data.train`` without replacement with seed
``train.seed + n`` (:func:`prompt_draw`). The whole file is read and its rows checked as strings (a bad
row still stops the run with its ``FILE:LINE``), but only the prompts the run's stages will draw are
tokenized before the first stage (:func:`load_prompts` with ``stages``), any other only if it is read:
the scheme of the offline path (:class:`alignkit.data.pipeline.TokenizedRows`). The draws are those of
the whole file tokenized up front whenever every row tokenizes. As there, two cases tokenize every row
first: ``data.drop_long_prompts`` (a dropped prompt changes the number of prompts, hence the draws) and
``data.skip_bad_rows`` when a drawn row turns out bad only once tokenized.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from alignkit.config import Config
from alignkit.errors import ConfigError, DataError

log = logging.getLogger("alignkit")


@dataclass
class PromptRow:
    """A prompt of ``data.train`` with the row's own responses (the ``dataset`` source)."""

    prompt: Any  # a string or chat messages, as in the data
    prompt_ids: list[int]
    responses: list[Any]
    response_ids: list[list[int]]


def prompt_draw(n: int, b: int, seed: int) -> list[int]:
    """Indices of ``b`` of ``n`` prompts drawn without replacement (all, in order, when ``b`` is 0 or >= ``n``)."""
    if b <= 0 or b >= n:
        return list(range(n))
    return random.Random(seed).sample(range(n), b)


def draw(rows: Sequence[PromptRow], b: int, seed: int) -> list[PromptRow]:
    """The rows at :func:`prompt_draw` (the prompts of a stage)."""
    return [rows[i] for i in prompt_draw(len(rows), b, seed)]


def stage_draws(cfg: Config, n: int, stages: Iterable[int]) -> list[int]:
    """Every index the draws of ``stages`` take from ``n`` prompts, in first-draw order, once each."""
    seen: dict[int, None] = {}
    for stage in stages:
        seen.update(dict.fromkeys(prompt_draw(n, cfg.online.prompts_per_stage, cfg.train.seed + stage)))
        if len(seen) == n:
            break
    return list(seen)


class PromptRows(Sequence):
    """The prompt rows of ``examples``, each tokenized when first read (a view of a ``TokenizedRows``)."""

    def __init__(self, examples: list, tokenized):
        self.examples, self.tokenized = examples, tokenized

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        tok = self.tokenized[index]
        ex = self.examples[index]
        return PromptRow(ex.prompt, tok.prompt_ids, list(ex.responses), tok.response_ids)


def load_prompts(cfg: Config, tokenizer, with_responses: bool = False,
                 stages: Iterable[int] | None = None) -> Sequence[PromptRow]:
    """The prompts of ``data.train`` (whole-text rows have none and are skipped), tokenized by ``data``.

    ``stages`` (the stages the run will sample): tokenize only the prompts their draws take, the others
    when read; ``None``: every prompt now (``alignkit generate``, which samples them all)."""
    from alignkit.data.examples import load_examples
    from alignkit.data.pipeline import TokenizedRows, resolve_data_path, tokenize_config

    data = cfg.data
    if not data.train:
        raise ConfigError("data.train: no prompts given; set data.train to a file of prompts (any format)")
    examples = load_examples(resolve_data_path(data.train), format=data.format, split=data.split,
                             skip_bad_rows=data.skip_bad_rows, max_rows=data.max_rows or None, log=log.warning)
    examples = [replace(ex, responses=list(ex.responses) if with_responses else [], scores=None, desirable=None)
                for ex in examples if not ex.meta.get("whole_text")]
    if not examples:
        raise ConfigError(f"data.train: {data.train} has no prompts (whole-text rows carry none)")
    tok_cfg = tokenize_config(data)
    if stages is not None and not data.drop_long_prompts:  # a dropped prompt changes the draws: know them all
        tokenized = TokenizedRows(examples, tokenizer, tok_cfg, data.skip_bad_rows)
        if tokenized.prepared(stage_draws(cfg, len(examples), stages)) is not None:
            return PromptRows(examples, tokenized)
    return tokenize_all(examples, tokenizer, tok_cfg, data.skip_bad_rows)


def tokenize_all(examples: list, tokenizer, tok_cfg, skip_bad_rows: bool) -> list[PromptRow]:
    """Every prompt row tokenized now; rows that fail are dropped under ``skip_bad_rows`` (and dropped long
    prompts always), so the draws are over the rows that tokenize."""
    from alignkit.data.tokenize import LongPrompt, tokenize_example

    rows, dropped = [], 0
    for ex in examples:
        try:
            tok = tokenize_example(ex, tokenizer, tok_cfg)
        except DataError as err:
            dropped += isinstance(err, LongPrompt)
            if not (skip_bad_rows or isinstance(err, LongPrompt)):
                raise
            continue
        rows.append(PromptRow(ex.prompt, tok.prompt_ids, list(ex.responses), tok.response_ids))
    if dropped:
        log.warning("dropped %d prompts longer than max_prompt_length %d (data.drop_long_prompts)", dropped,
                    tok_cfg.max_prompt_length)
    if not rows:
        raise ConfigError("data.train: no prompt of the file tokenizes (see the warnings above)")
    return rows
