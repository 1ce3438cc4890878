"""From a ``DataConfig`` to tokenized train and eval sets, with every check done before training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alignkit.data.schema import Example, TokenizedExample
from alignkit.errors import DataError

log = logging.getLogger("alignkit")


def resolve_data_path(path: str) -> str:
    """``alignkit:NAME`` names a small dataset shipped inside the package (``alignkit/assets``)."""
    if path.startswith("alignkit:"):
        from importlib.resources import files

        from alignkit.errors import ConfigError

        asset = files("alignkit") / "assets" / path.split(":", 1)[1]
        if not asset.is_file():
            raise ConfigError(f"{path}: no built-in dataset of that name")
        return str(asset)
    return path


def tokenize_config(data_cfg):
    """The tokenizer's length budgets and truncation rule from a ``DataConfig``."""
    from alignkit.data.tokenize import TokenizeConfig

    return TokenizeConfig(max_prompt_length=data_cfg.max_prompt_length, max_length=data_cfg.max_length,
                          truncation=data_cfg.truncation, drop_long_prompts=data_cfg.drop_long_prompts,
                          chat_strings=data_cfg.chat_strings)


def load_split(data_cfg, *, seed: int = 0, need: str = "", method: str = "") -> tuple[list, list]:
    """Load and validate ``data.train`` and the held-out set (``data.eval``, or ``eval_size`` rows of
    ``data.train`` split off with ``data.split_seed``, else ``seed``), as
    :class:`~alignkit.data.schema.Example` rows.

    ``need`` (a key of :data:`alignkit.data.requirements.NEEDS`) is checked on every row of both
    sets, naming ``method`` and the first row that lacks it."""
    from alignkit.data.examples import load_examples, split_train_eval
    from alignkit.data.requirements import check_examples
    from alignkit.errors import ConfigError

    if not data_cfg.train:
        raise ConfigError("data.train: no training data given; set data.train to a file, folder or Hub id")
    common = dict(format=data_cfg.format, skip_bad_rows=data_cfg.skip_bad_rows, log=log.warning)
    train = load_examples(resolve_data_path(data_cfg.train), split=data_cfg.split, max_rows=data_cfg.max_rows or None, **common)
    if data_cfg.eval:
        held_out = load_examples(resolve_data_path(data_cfg.eval), split=data_cfg.eval_split, **common)
    elif data_cfg.eval_size > 0:
        size = data_cfg.eval_size
        kwargs = {"eval_fraction": size} if size < 1 else {"eval_size": int(size)}
        split_seed = seed if data_cfg.split_seed < 0 else data_cfg.split_seed
        train, held_out = split_train_eval(train, seed=split_seed, **kwargs)
    else:
        held_out = []
    if need:
        check_examples(train, need, method=method)
        check_examples(held_out, need, method=method, key="data.eval")
    return train, held_out


def load_tokenized(data_cfg, tokenizer, *, seed: int = 0, formats: tuple[str, ...] = (), need: str = "",
                   method: str = "", used: Callable[[int], Iterable[int]] | None = None,
                   ) -> tuple[Sequence[TokenizedExample], list[TokenizedExample]]:
    """Load, validate (see :func:`load_split`) and tokenize ``data.train`` and the held-out set.

    ``used(n)`` (the training rows a run of ``n`` rows will read, e.g.
    :func:`alignkit.train.runtime.used_indices`) makes the training set a :class:`TokenizedRows`:
    those rows are tokenized now, any other row only if it is read. The held-out set is tokenized
    whole: the run evaluates all of it at its end."""
    from alignkit.data.tokenize import tokenize_examples

    train, held_out = load_split(data_cfg, seed=seed, need=need, method=method)
    tok_cfg = tokenize_config(data_cfg)
    skip = data_cfg.skip_bad_rows
    eager = used is None or data_cfg.drop_long_prompts  # dropped rows change the data order: know them all
    rows = None if eager else TokenizedRows(train, tokenizer, tok_cfg, skip).prepared(used(len(train)))
    if rows is None:
        rows = tokenize_examples(train, tokenizer, tok_cfg, skip_bad_rows=skip, desc="tokenize train")
    return rows, tokenize_examples(held_out, tokenizer, tok_cfg, skip_bad_rows=skip, desc="tokenize held-out")


class TokenizedRows(Sequence):
    """``examples`` (validated at load, string-level), each tokenized when first read.

    Same length and order as ``examples``, so a run's data order (a seeded permutation of
    ``len(rows)``) and its resume are those of the whole file tokenized up front whenever every
    row tokenizes; a run of a few steps tokenizes a few batches of a large file. A row whose
    tokenization fails raises its ``FILE:LINE`` :class:`~alignkit.errors.DataError` when read;
    :meth:`prepared` reads the rows a run will use before it starts.
    """

    def __init__(self, examples: Sequence[Example], tokenizer, cfg, skip_bad_rows: bool = False):
        self.examples, self.tokenizer, self.cfg, self.skip_bad_rows = examples, tokenizer, cfg, skip_bad_rows
        self.done: dict[int, TokenizedExample] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices; IndexError out of range
        if index not in self.done:
            from alignkit.data.tokenize import tokenize_example

            self.done[index] = tokenize_example(self.examples[index], self.tokenizer, self.cfg)
        return self.done[index]

    def prepared(self, indices: Iterable[int]) -> TokenizedRows | None:
        """Tokenize rows ``indices`` now (batch-encoded, with a progress bar); ``None`` when one of them is
        a bad row under ``skip_bad_rows``: skipping it changes the data order, so the caller tokenizes
        every row and drops the bad ones, as without this class."""
        from alignkit.data.tokenize import tokenize_examples

        todo = [i for i in dict.fromkeys(indices) if i not in self.done]
        try:
            rows = tokenize_examples([self.examples[i] for i in todo], self.tokenizer, self.cfg,
                                     desc=f"tokenize {len(todo)} of {len(self)} train rows")
        except DataError as err:
            if not self.skip_bad_rows:
                raise
            log.warning("%s: tokenizing every row to skip the bad ones (data.skip_bad_rows)", err)
            return None
        self.done.update(zip(todo, rows))
        if len(todo) < len(self):
            log.info("tokenized the %d of %d training rows this run uses; others only if read", len(todo), len(self))
        return self


def map_rows(fn: Callable[[TokenizedExample], Any], rows: Sequence[TokenizedExample]) -> Sequence:
    """``[fn(row) for row in rows]``, lazily when ``rows`` tokenizes lazily."""
    if isinstance(rows, (TokenizedRows, MappedRows)):
        return MappedRows(fn, rows)
    return [fn(row) for row in rows]


class MappedRows(Sequence):
    """A lazy ``fn`` view of a :class:`TokenizedRows` (e.g. SFT's best response of each row)."""

    def __init__(self, fn: Callable[[TokenizedExample], Any], rows: Sequence[TokenizedExample]):
        self.fn, self.rows = fn, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.fn(row) for row in self.rows[index]]
        return self.fn(self.rows[index])
