"""Fill a project's database from its data file, once; later opens check the file is unchanged.

Any file alignkit reads can be labelled. ``alignkit generate`` writes ``{prompt, responses}``
(plus ``scores`` when the config has rewards): read as ranked rows, the scores ignored. Rows
are read with :func:`alignkit.data.formats` converters, so a bad row is reported as
``FILE:LINE: reason``. Prompt-only rows have nothing to label and are an error. A
qa-feedback row's ``feedback`` becomes a ``spans`` label of the annotator
``import:qa-feedback``, so stats compare new annotators with it and the export gives it back.
"""

from __future__ import annotations

import logging

from alignkit.data.formats import FORMATS, MAX_REPORTED, detect_format
from alignkit.data.loaders import BadRow, read_rows
from alignkit.data.schema import Text
from alignkit.errors import ConfigError, DataError
from alignkit.label.project import Project
from alignkit.label.store import IMPORTED_PREFIX, LabelStore
from alignkit.train.checkpoint import sha256  # the one file hash (checkpoints verify theirs with it)

_logger = logging.getLogger(__name__)


def display_text(text: Text) -> str:
    """A prompt or response as the page shows it: a chat becomes ``role: content`` paragraphs."""
    if isinstance(text, str):
        return text
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in text)


def _convert(row: dict, location: str, fmt: str):
    if fmt == "ranked" and row.get("responses") is not None and row.get("scores") is None:
        # alignkit generate without rewards: responses to rank, no scores yet
        example = FORMATS["ranked"]({**row, "scores": [0] * len(row["responses"])}, location)
        example.scores = None
        return example
    return FORMATS[fmt](row, location)


def read_items(project: Project) -> tuple[list[tuple[str, str, list[str], dict]], list[tuple[int, str, str, dict]]]:
    """(format, prompt, responses, row) per usable row, and the labels that came with the data."""
    cfg = project.config
    if cfg.format != "auto" and cfg.format not in FORMATS:
        raise ConfigError(f"{project.path}: format: unknown format {cfg.format!r}; choose auto or one of "
                          f"{', '.join(FORMATS)}")
    if not project.data_path.is_file():
        raise ConfigError(f"{project.path}: data: {project.data_path} does not exist")
    items, imported, bad = [], [], []
    fmt = None if cfg.format == "auto" else cfg.format
    for row, location in read_rows(project.data_path):
        try:
            if isinstance(row, BadRow):
                raise row
            fmt = fmt or detect_format(row)
            if fmt is None:
                raise BadRow(f"cannot tell the format from the columns {sorted(row)}; set format in the project")
            example = _convert(row, location, fmt)
        except BadRow as e:
            bad.append(f"{location}: {e.reason}")
            continue
        items.append((fmt, display_text(example.prompt), [display_text(r) for r in example.responses], row))
        if "feedback" in example.meta:
            imported.append((len(items), f"{IMPORTED_PREFIX}qa-feedback", "spans", example.meta["feedback"]))
        if cfg.max_items and len(items) >= cfg.max_items:
            break
    if bad and not (cfg.skip_bad_rows and items):
        more = f"\n... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise DataError("\n".join(bad[:MAX_REPORTED]) + more + f"\n{len(bad)} bad rows in {project.data_path}; "
                        "fix or remove them, or set skip_bad_rows: true")
    if bad:
        _logger.warning("skipped %d bad rows of %s (first: %s)", len(bad), project.data_path, bad[0])
    if not any(responses for _, _, responses, _ in items):
        raise DataError(f"{project.data_path}: no row has responses to label (format {fmt}); sample some with "
                        "`alignkit generate CONFIG.yaml` (data.train: this file) and label its output")
    return items, imported


def open_project(project: Project) -> LabelStore:
    """The project's database, filled from its data file the first time."""
    project.database_path.parent.mkdir(parents=True, exist_ok=True)
    store = LabelStore(project.database_path)
    digest = sha256(project.data_path) if project.data_path.is_file() else None
    if store.item_count() == 0:
        items, imported = read_items(project)
        store.add_items(items, digest, imported)
    elif digest != store.data_sha256():
        raise ConfigError(f"{project.path}: data: {project.data_path} changed since {project.database_path} was "
                          "filled from it; restore the file, or set database: to a new file for the new data")
    return store
