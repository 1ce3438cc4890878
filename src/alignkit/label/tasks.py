"""The task types, one registry: what a submitted label must look like and what it says.

Each :class:`TaskType` checks a submission from the browser (``validate``, raising
:class:`LabelError` with a reason), turns a stored label into comparable judgments for the
agreement statistics (``judgments``, compared at the Krippendorff ``level``), and, where the
task carries a preference, into per-response scores (``scores``: ranked export) or ordered
pairs (``preferences``: pairwise export). A stored label value is a JSON object:

========  ==========================================================================
rank      ``{"ranks": [1, 2, 2, 3]}``: 1 is best, equal ranks are ties (one per response)
choose    ``{"choice": "A" | "B" | "tie" | "both_bad", "pair": [i, j]}``: A is response i
rate      ``{"ratings": [1-7, ...], "flags": [[flag, ...], ...]}``: one each per response
spans     qa-feedback's ``feedback`` object: ``{"errors": [{"error type", "explanation",
          "start", "end"}], "missing-info": [...]}`` over response ``span_response``
========  ==========================================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from alignkit.label.agreement import span_f1
from alignkit.label.project import ProjectConfig

CHOICES = ("A", "B", "tie", "both_bad")
RATING_SCALE = range(1, 8)  # InstructGPT's 1-7 Likert scale


class LabelError(ValueError):
    """A submitted label is malformed; the message says which field."""


@dataclass(frozen=True)
class Item:
    """One row to label: a prompt, its K responses (display strings) and the row as imported."""

    id: int
    prompt: str
    responses: list[str]
    row: dict
    format: str


@dataclass(frozen=True)
class TaskType:
    name: str
    title: str  # shown on the home page
    min_responses: int  # items with fewer responses are not offered for this task
    level: str  # Krippendorff level of the judgments: nominal or ordinal
    validate: Callable[[Any, Item, ProjectConfig], dict]
    judgments: Callable[[dict, Item, ProjectConfig], dict[str, Hashable]]
    scores: Callable[[dict], list[float]] | None = None  # per response, higher is better
    preferences: Callable[[dict], list[tuple[int, int]]] | None = None  # (better, worse) pairs
    page_data: Callable[[Item, ProjectConfig], dict] = lambda item, cfg: {}  # extra data for the page script
    overlap: Callable[[dict, dict], float] | None = None  # a pair agreement score of its own (span F1)

    def shown(self, item: Item, cfg: ProjectConfig) -> list[tuple[int, str]]:
        """(index, text) of the responses the page shows, in order."""
        order = self.page_data(item, cfg).get("order", range(len(item.responses)))
        return [(i, item.responses[i]) for i in order]


TASKS: dict[str, TaskType] = {}


def register_task(task: TaskType) -> TaskType:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    TASKS[task.name] = task
    return task


def _int_list(value: Any, key: str, n: int, allowed: range) -> list[int]:
    items = value.get(key) if isinstance(value, dict) else None
    if not isinstance(items, list) or len(items) != n:
        raise LabelError(f"{key} must be a list of {n} integers")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
            raise LabelError(f"{key}: every entry must be an integer in {allowed.start}-{allowed.stop - 1}")
    return items


# 1. rank ---------------------------------------------------------------------------


def _validate_rank(value: Any, item: Item, cfg: ProjectConfig) -> dict:
    k = len(item.responses)
    return {"ranks": _int_list(value, "ranks", k, range(1, k + 1))}


def _rank_judgments(value: dict, item: Item, cfg: ProjectConfig) -> dict[str, Hashable]:
    """Every pair i < j: +1 when i is ranked better, 0 for a tie, -1 when j is (ordinal)."""
    r = value["ranks"]
    return {f"{i}-{j}": (r[j] > r[i]) - (r[j] < r[i]) for i in range(len(r)) for j in range(i + 1, len(r))}


def _rank_scores(value: dict) -> list[float]:
    k = len(value["ranks"])
    return [float(k - r) for r in value["ranks"]]


def _ordered_pairs(scores: list[float]) -> list[tuple[int, int]]:
    n = len(scores)
    return [(i, j) for i in range(n) for j in range(n) if scores[i] > scores[j]]


register_task(TaskType(
    "rank", "Rank the responses", 2, "ordinal", _validate_rank, _rank_judgments,
    scores=_rank_scores, preferences=lambda v: _ordered_pairs(_rank_scores(v)),
))


# 2. choose -------------------------------------------------------------------------


def choose_pair(item_id: int, k: int, seed: int) -> list[int]:
    """The two responses (A, B) an item's choose page shows: seeded, in random order against position bias."""
    return random.Random(f"{seed}:{item_id}").sample(range(k), 2)


def _validate_choose(value: Any, item: Item, cfg: ProjectConfig) -> dict:
    choice = value.get("choice") if isinstance(value, dict) else None
    if choice not in CHOICES:
        raise LabelError(f"choice must be one of {', '.join(CHOICES)}")
    return {"choice": choice, "pair": choose_pair(item.id, len(item.responses), cfg.seed)}


def _choose_preferences(value: dict) -> list[tuple[int, int]]:
    a, b = value["pair"]
    return {"A": [(a, b)], "B": [(b, a)]}.get(value["choice"], [])


register_task(TaskType(
    "choose", "Choose the better of two", 2, "nominal", _validate_choose,
    lambda v, item, cfg: {"choice": v["choice"]}, preferences=_choose_preferences,
    page_data=lambda item, cfg: {"order": choose_pair(item.id, len(item.responses), cfg.seed), "choices": CHOICES},
))


# 3. rate ---------------------------------------------------------------------------


def _validate_rate(value: Any, item: Item, cfg: ProjectConfig) -> dict:
    k = len(item.responses)
    ratings = _int_list(value, "ratings", k, RATING_SCALE)
    flags = value.get("flags", [[] for _ in range(k)])
    if not isinstance(flags, list) or len(flags) != k or not all(isinstance(f, list) for f in flags):
        raise LabelError(f"flags must be a list of {k} lists")
    for f in flags:
        unknown = [x for x in f if x not in cfg.failure_flags]
        if unknown:
            raise LabelError(f"unknown flag {unknown[0]!r}")
    return {"ratings": ratings, "flags": [sorted(set(f), key=cfg.failure_flags.index) for f in flags]}


register_task(TaskType(
    "rate", "Rate each response 1-7", 1, "ordinal", _validate_rate,
    lambda v, item, cfg: {str(i): r for i, r in enumerate(v["ratings"])},
    scores=lambda v: [float(r) for r in v["ratings"]],
    page_data=lambda item, cfg: {"flags": cfg.failure_flags},
))


# 4. spans --------------------------------------------------------------------------


def span_text(item: Item, cfg: ProjectConfig) -> str:
    """The response the spans task marks (``span_response``, or the last when an item has fewer)."""
    return item.responses[min(cfg.span_response, len(item.responses)) - 1]


def _validate_spans(value: Any, item: Item, cfg: ProjectConfig) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("errors", []), list):
        raise LabelError("errors must be a list of spans")
    n = len(span_text(item, cfg))
    errors = []
    for e in value.get("errors", []):
        start, end = (e.get("start"), e.get("end")) if isinstance(e, dict) else (None, None)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= n):
            raise LabelError(f"a span needs integers 0 <= start < end <= {n}")
        if e.get("error type") not in cfg.error_categories:
            raise LabelError(f"unknown error type {e.get('error type')!r}")
        errors.append({"error type": e["error type"], "explanation": str(e.get("explanation", "")),
                       "start": start, "end": end})
    if not isinstance(value.get("missing-info", []), list):
        raise LabelError("missing-info must be a list")
    missing = []
    for m in value.get("missing-info", []):
        if not isinstance(m, dict) or m.get("error type") not in cfg.missing_categories:
            raise LabelError(f"missing-info entries need an error type in {', '.join(cfg.missing_categories)}")
        explanation = str(m.get("explanation", "")).strip()
        if explanation:
            missing.append({"error type": m["error type"], "explanation": explanation})
    return {"errors": errors, "missing-info": missing}


def span_tuples(value: dict) -> list[tuple[int, int, str]]:
    return [(e["start"], e["end"], e["error type"]) for e in value["errors"]]


def _span_judgments(value: dict, item: Item, cfg: ProjectConfig) -> dict[str, Hashable]:
    """One nominal judgment per character of the marked response: its categories, or "" for none."""
    cats: dict[int, set[str]] = {}
    for start, end, cat in span_tuples(value):
        for i in range(start, end):
            cats.setdefault(i, set()).add(cat)
    n = max([len(span_text(item, cfg))] + [e for _, e, _ in span_tuples(value)])
    return {str(i): "|".join(sorted(cats.get(i, ()))) for i in range(n)}


register_task(TaskType(
    "spans", "Mark errors in a response", 1, "nominal", _validate_spans, _span_judgments,
    overlap=lambda a, b: span_f1(span_tuples(a), span_tuples(b)),
    page_data=lambda item, cfg: {"order": [min(cfg.span_response, len(item.responses)) - 1],
                                 "text": span_text(item, cfg), "categories": cfg.error_categories,
                                 "missing": cfg.missing_categories},
))
