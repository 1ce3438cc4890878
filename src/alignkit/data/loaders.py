"""Read rows (plain dicts) from any container: a file, a saved dataset, a Hub id.

:func:`read_rows` knows nothing about formats; it yields ``(row, location)`` pairs
and :mod:`alignkit.data.formats` turns each row into an ``Example``. Containers:

==========================  ============================================  ==============
path                        read as                                       location
==========================  ============================================  ==============
``*.jsonl``                 one JSON object per line (blank lines         ``FILE:LINE``
                            skipped)                                      (1-based)
``*.json`` (any other       one JSON document: a list of objects, or an   ``FILE:[i]``
suffix)                     object holding that list under its single     (0-based)
                            key; if it is not one document, JSON lines    ``FILE:LINE``
``*.parquet``               one row per table row                         ``FILE:[i]``
gzip of the above           detected by its magic bytes, any suffix       as above
a folder                    ``datasets.Dataset.save_to_disk`` (a          ``DIR:[i]``
                            ``DatasetDict`` picks ``split``)
anything else that does     ``datasets.load_dataset(id, split=split)``    ``ID:[i]``
not exist locally
==========================  ============================================  ==============

A row that cannot be read (a line that is not JSON, a list item that is not an
object) is yielded as a :class:`BadRow` in place of the dict, so that the caller
applies one bad-row policy to unreadable and unconvertible rows alike. Problems
with the whole container (missing, empty, corrupt, not UTF-8) raise
:class:`~alignkit.errors.DataError` at once.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

from alignkit import in_memory
from alignkit.errors import DataError

Row = dict[str, Any]
PathLike = Union[str, os.PathLike]

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
# Suffixes that mark a local file path; such a path is never tried on the Hub.
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz", ".jsonl.gz", ".json.gz")


class BadRow(Exception):
    """One row cannot be used; ``reason`` says why (the caller adds ``FILE:LINE``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_rows(path_or_id: PathLike, split: str = "train") -> Iterator[tuple[Row | BadRow, str]]:
    """Yield ``(row, location)`` for every row of a file, saved dataset or Hub dataset.

    ``row`` is a dict, or a :class:`BadRow` for a row that could not be parsed.
    ``split`` matters only for a saved ``DatasetDict`` and for Hub datasets.
    Raises :class:`DataError` when the source is missing, unreadable or has no rows.
    """
    name = str(path_or_id)
    path = Path(path_or_id).expanduser()
    if in_memory.is_name(name):
        rows = _read_in_memory(name, split)
    elif path.is_dir():
        rows = _read_saved_dataset(path, split)
    elif path.is_file():
        rows = _read_file(path)
    elif _looks_local(name):
        raise DataError(f"{name}: no such file or folder (relative paths start at {os.getcwd()})")
    else:
        rows = _read_hub(name, split)
    count = 0
    for item in rows:
        count += 1
        yield item
    if count == 0:
        raise DataError(f"{name}: no rows")


def _looks_local(name: str) -> bool:
    """True for a name that cannot be a Hub id (``name`` or ``org/name``)."""
    return (
        name.endswith(LOCAL_SUFFIXES)
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
    )


# 1. Local files ----------------------------------------------------------------


def _read_file(path: Path) -> Iterator[tuple[Row | BadRow, str]]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(PARQUET_MAGIC) or (path.suffix == ".parquet" and magic[:2] != GZIP_MAGIC):
        yield from _read_parquet(path)
        return
    text = _read_text(path, gzipped=magic.startswith(GZIP_MAGIC))
    base = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    if base.endswith(".jsonl"):
        yield from _json_lines(text, path)
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):  # meant as one list: a broken file, not a bad row
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
        yield from _json_lines(text, path)  # JSON lines (or empty) under another suffix
        return
    yield from _list_rows(doc, path)


def _read_text(path: Path, gzipped: bool) -> str:
    try:
        if gzipped:
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
        return data.decode("utf-8-sig")
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; EOFError: truncated
        raise DataError(f"{path}: cannot read {'gzip data' if gzipped else 'file'} ({e})") from None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8") from None


def _single_list(doc: dict) -> list | None:
    """The list in ``{"key": [row, ...]}``; ``None`` when ``doc`` looks like one row.

    ``{"messages": [...]}`` is itself a row (a chat), so a list of chat messages
    (objects with a ``role``) is not taken as the list of rows.
    """
    if len(doc) != 1:
        return None
    (value,) = doc.values()
    if not isinstance(value, list):
        return None
    if value and all(isinstance(v, dict) and "role" in v for v in value):
        return None
    return value


def _json_lines(text: str, path: Path) -> Iterator[tuple[Row | BadRow, str]]:
    # split on "\n" only: str.splitlines() would also break at U+2028 and friends, which
    # JSON allows raw inside strings, and shift every later line number
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        location = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield BadRow(f"invalid JSON ({e.msg}, column {e.colno})"), location
            continue
        yield _as_row(row), location


def _list_rows(doc: Any, path: Path) -> Iterator[tuple[Row | BadRow, str]]:
    if isinstance(doc, dict):
        inner = _single_list(doc)
        doc = inner if inner is not None else [doc]
    if not isinstance(doc, list):
        raise DataError(f"{path}: expected a list of objects, got a JSON {type(doc).__name__}")
    for i, row in enumerate(doc):
        yield _as_row(row), f"{path}:[{i}]"


def _as_row(value: Any) -> Row | BadRow:
    if isinstance(value, dict):
        return value
    return BadRow(f"expected a JSON object, got {type(value).__name__}")


def _read_parquet(path: Path) -> Iterator[tuple[Row | BadRow, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
        raise DataError(f"{path}: cannot read parquet ({_first_line(e)})") from None
    i = 0
    batches = table.iter_batches()
    while True:
        try:  # a damaged page shows only when its row group is read
            batch = next(batches, None)
        except Exception as e:  # OSError, ArrowInvalid: the file is damaged after its footer
            raise DataError(f"{path}:[{i}]: damaged parquet data at or after row {i} ({_first_line(e)})") from None
        if batch is None:
            return
        for row in batch.to_pylist():
            yield row, f"{path}:[{i}]"
            i += 1


# 2. Datasets: saved folders and the Hub ------------------------------------------


def _read_saved_dataset(path: Path, split: str) -> Iterator[tuple[Row | BadRow, str]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(
            f"{path}: a folder, but not one written by datasets' save_to_disk ({e}); "
            "pass a .jsonl/.json/.parquet file or a saved dataset folder"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r}; it has {', '.join(ds)} (set data.split)")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield row, f"{path}:[{i}]"


def _read_in_memory(name: str, split: str) -> Iterator[tuple[Row | BadRow, str]]:
    """A ``datasets.Dataset`` (or ``DatasetDict``, by ``split``) or a list of dicts given to the Python API."""
    data = in_memory.lookup(name)
    if data is None:
        raise DataError(f"{name}: not held in this session; give a file, a saved dataset folder or a Hub id")
    if hasattr(data, "keys") and not isinstance(data, dict):  # a DatasetDict
        if split not in data:
            raise DataError(f"{name}: no split {split!r}; it has {', '.join(data)} (set data.split)")
        data = data[split]
    for i, row in enumerate(data):
        yield _as_row(row), f"{name}[{i}]"


def _read_hub(dataset_id: str, split: str) -> Iterator[tuple[Row | BadRow, str]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, gated, unknown split: all the user's to fix
        raise DataError(
            f"{dataset_id}: does not exist locally and could not be loaded from the Hugging Face Hub "
            f"({type(e).__name__}: {_first_line(e)}); check the path, or the dataset id, split and your "
            "network (HF_HUB_OFFLINE), or download the data and pass a local file"
        ) from None
    for i, row in enumerate(ds):
        yield row, f"{dataset_id}:[{i}]"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no details"
