"""Score every response of a data file with a reward and write the rows back with ``scores``.

Input rows (any container :func:`~alignkit.data.loaders.read_rows` reads: jsonl,
json, parquet, gzip) hold a ``prompt`` (optional, default empty) and their
responses as one of

- ``responses``: a list (generations, e.g. best-of-N samples);
- ``response`` or ``completion``: one response;
- ``chosen`` and ``rejected``: pairwise data, scored as ``[chosen, rejected]``.
  These rows go through :mod:`alignkit.data.formats`, so HH-RLHF dialogue strings
  are split at the last ``"\\n\\nAssistant:"`` and TRL's implicit-prompt chat pairs
  take their shared messages as the prompt.

Each output line is the input row, unchanged but for ``scores`` (one float per
response, in the row's order; an existing ``scores`` is replaced). Chat messages are
rendered as ``role: content`` lines (:func:`~alignkit.rewards.base.as_text`), since
a reward scores plain text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alignkit.data.formats import FORMATS, detect_format
from alignkit.data.loaders import BadRow, read_rows
from alignkit.errors import DataError
from alignkit.rewards.base import Reward, as_text

CHUNK = 256  # pairs per call of reward.score (the reward batches further inside)


def row_texts(row: dict[str, Any], location: str) -> tuple[str, list[str]]:
    """The plain-text prompt and responses of one row (see the module doc for the columns)."""
    if row.get("chosen") is not None and row.get("rejected") is not None:
        fmt = detect_format(row) or "pairwise"
        try:
            example = FORMATS[fmt](row, location)
        except BadRow as e:
            raise DataError(f"{location}: {e.reason}") from None
        return as_text(example.prompt), [as_text(r) for r in example.responses]
    if row.get("responses") is not None:
        responses = row["responses"]
        if not isinstance(responses, list):
            raise DataError(f"{location}: 'responses' must be a list, got {type(responses).__name__}")
    elif row.get("response") is not None or row.get("completion") is not None:
        responses = [row["response"] if row.get("response") is not None else row["completion"]]
    else:
        raise DataError(
            f"{location}: no responses; expected 'responses' (a list), 'response', 'completion', "
            "or 'chosen' and 'rejected'"
        )
    prompt = row.get("prompt") or ""
    for i, text in enumerate([prompt, *responses]):
        if not _is_text(text):
            what = "prompt" if i == 0 else f"response {i}"
            raise DataError(f"{location}: {what} must be a string or a list of {{role, content}} messages")
    return as_text(prompt), [as_text(r) for r in responses]


def _is_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )


def score_file(
    reward: Reward,
    data_path: str | os.PathLike,
    out_path: str | os.PathLike,
    progress: bool = True,
) -> int:
    """Score ``data_path`` with ``reward``, write jsonl to ``out_path``; returns the number of rows.

    All rows are read first (a bad row raises :class:`DataError` naming ``FILE:LINE``
    before anything is scored), then the (prompt, response) pairs are scored in
    chunks, with a progress bar over responses.
    """
    rows, prompts, responses, owner = [], [], [], []  # owner[j]: the row of pair j
    for row, location in read_rows(data_path):
        if isinstance(row, BadRow):
            raise DataError(f"{location}: {row.reason}")
        prompt, texts = row_texts(row, location)
        owner.extend([len(rows)] * len(texts))
        prompts.extend([prompt] * len(texts))
        responses.extend(texts)
        rows.append(dict(row, scores=[]))

    bar = tqdm(
        total=len(responses), desc=f"scoring with {reward.name}", unit="response", disable=not progress
    )
    for start in range(0, len(responses), CHUNK):
        stop = start + CHUNK
        scores = reward.score(prompts[start:stop], responses[start:stop]).tolist()
        for j, s in zip(range(start, stop), scores):
            rows[owner[j]]["scores"].append(float(s))
        bar.update(len(scores))
    bar.close()

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
