"""Loading a file as :class:`~alignkit.data.schema.Example` rows, and the train / eval split.

:func:`load_examples` reads the rows (:func:`~alignkit.data.loaders.read_rows`), picks the
converter of :data:`~alignkit.data.formats.FORMATS` (named, or detected by the majority of the
first rows, see :func:`~alignkit.data.formats.detect_format`) and applies one bad-row policy;
:func:`split_train_eval` holds out a seeded sample.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from alignkit.data.formats import FORMATS, MAX_REPORTED, detect_format
from alignkit.data.loaders import BadRow, PathLike, Row, read_rows
from alignkit.data.schema import Example
from alignkit.errors import ConfigError, DataError

_logger = logging.getLogger(__name__)


def load_examples(
    path: PathLike,
    *,
    format: str = "auto",
    split: str = "train",
    skip_bad_rows: bool = False,
    max_rows: int | None = None,
    log: Callable[[str], Any] | None = None,
) -> list[Example]:
    """Read ``path`` (file, saved dataset folder or Hub id) as a list of examples.

    Args:
        format: a name in :data:`FORMATS`, or ``"auto"`` to detect it from the
            columns of every row (:func:`detect_format`): the format most of the
            first :data:`DETECT_WINDOW` readable rows have wins, and a row of another
            format is a bad row naming both (so one odd first line cannot turn an
            SFT file into prompts).
        split: the split of a saved ``DatasetDict`` or a Hub dataset.
        skip_bad_rows: drop rows that cannot be used and log how many; by default
            any bad row raises a :class:`DataError` listing the first few.
        max_rows: stop after this many examples (for quick runs).
        log: where warnings go (skipped rows, dropped duplicates); default ``logging``.
    """
    if format != "auto" and format not in FORMATS:
        raise ConfigError(
            f"data.format: unknown format {format!r}; choose auto or one of {', '.join(FORMATS)}"
        )
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"data.max_rows must be at least 1, got {max_rows}")
    log = log or _logger.warning
    rows = read_rows(path, split)
    check_row = _any_row
    if format == "auto":
        format, rows, check_row = _detect_by_majority(rows)
    convert = FORMATS.get(format)  # None only when no row is readable
    examples: list[Example] = []
    bad: list[str] = []  # the first MAX_REPORTED "LOCATION: reason" lines
    n_rows = n_bad = 0
    for row, location in rows:
        n_rows += 1
        try:
            if isinstance(row, BadRow):
                raise row
            check_row(row, location)
            examples.append(convert(row, location))
        except BadRow as e:
            n_bad += 1
            if len(bad) < MAX_REPORTED:
                bad.append(f"{location}: {e.reason}")
            continue
        if max_rows is not None and len(examples) >= max_rows:
            break
    _apply_bad_row_policy(path, format, bad, n_bad, n_rows, skip_bad_rows, examples, log)
    n_dedup = sum("dropped_duplicates" in ex.meta for ex in examples)
    if n_dedup:
        log(f"dropped duplicate responses in {n_dedup} rows of {path} (kept the first of each)")
    return examples


DETECT_WINDOW = 1000  # readable rows whose formats vote on the format of a file


def _any_row(row: Row, location: str) -> None:
    """The row check of a named format: its converter alone decides."""


def _detect_by_majority(rows: Iterator[tuple[Row | BadRow, str]]):
    """``(format, rows, check_row)``: the format most of the first :data:`DETECT_WINDOW` readable rows
    have (the earliest on a tie), the rows again (those read to vote included), and a check that
    makes a row of another detected format a :class:`BadRow` naming both."""
    window: list[tuple[Row | BadRow, str]] = []
    votes: Counter[str] = Counter()
    first_of: dict[str, str] = {}
    for row, location in rows:
        window.append((row, location))
        if isinstance(row, BadRow):
            continue
        name = detect_format(row)
        if name is None and not votes:
            raise DataError(
                f"{location}: cannot tell the format from the columns {sorted(row)}; set data.format to one "
                f"of {', '.join(FORMATS)} (see alignkit.data.formats for the columns each expects)"
            )
        if name is not None:
            votes[name] += 1
            first_of.setdefault(name, location)
        if sum(votes.values()) >= DETECT_WINDOW:
            break
    if not votes:  # only unreadable rows: the bad-row policy reports them
        return "auto", iter(window), _any_row
    chosen = max(votes, key=lambda name: (votes[name], -list(first_of).index(name)))
    _logger.info("%s: detected format %s (%d of %d rows)", first_of[chosen], chosen, votes[chosen],
                 sum(votes.values()))

    def check_row(row: Row, location: str) -> None:
        name = detect_format(row)
        if name is not None and name != chosen:
            raise BadRow(
                f"has the columns of format {name} but the file is format {chosen} "
                f"(like {first_of[chosen]}); fix the row, or set data.format"
            )

    return chosen, chain(window, rows), check_row


def _apply_bad_row_policy(
    path: PathLike,
    format: str,
    bad: list[str],
    n_bad: int,
    n_rows: int,
    skip: bool,
    examples: list[Example],
    log: Callable[[str], Any],
) -> None:
    if n_bad == 0:
        return
    more = f"\n... and {n_bad - len(bad)} more" if n_bad > len(bad) else ""
    listing = "\n".join(bad) + more
    if not examples:
        raise DataError(f"{listing}\n{path}: all {n_rows} rows are bad (format {format})")
    if not skip:
        raise DataError(
            f"{listing}\n{n_bad} bad rows of {n_rows} in {path} (format {format}); "
            "set data.skip_bad_rows: true to skip them"
        )
    log(f"skipped {n_bad} bad rows of {n_rows} in {path} (first: {bad[0]})")


def split_train_eval(
    examples: list[Example],
    *,
    eval_fraction: float | None = None,
    eval_size: int | None = None,
    seed: int = 0,
) -> tuple[list[Example], list[Example]]:
    """Split into (train, eval) by a seeded shuffle; both keep the input order.

    Give exactly one of ``eval_fraction`` (in (0, 1); at least one example) or
    ``eval_size``. The same examples, fraction and seed always give the same split.
    """
    if (eval_fraction is None) == (eval_size is None):
        raise ConfigError("give exactly one of data.eval_fraction and data.eval_size")
    n = len(examples)
    if eval_fraction is not None:
        if not 0.0 < eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {eval_fraction}")
        eval_size = max(1, round(n * eval_fraction))
    if isinstance(eval_size, bool) or not isinstance(eval_size, int) or not 1 <= eval_size < n:
        raise ConfigError(
            f"data.eval_size must be an integer in [1, {n - 1}] for {n} examples, got {eval_size}"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held_out = set(order[:eval_size])
    train = [ex for i, ex in enumerate(examples) if i not in held_out]
    evals = [ex for i, ex in enumerate(examples) if i in held_out]
    return train, evals
