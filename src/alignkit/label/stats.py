"""``alignkit label stats``: how much the annotators agree, task by task.

For each task, every label becomes judgments (:attr:`TaskType.judgments`: a response's rating,
the order of a pair of ranked responses, a choice, a character's error category); a unit is
one (item, judgment key). Reported: Krippendorff's alpha over the units at the task's level
(ordinal for rankings and ratings), pairwise agreement (the fraction of annotator pairs that
gave a unit the same value), the task's own overlap score (span F1), each annotator's
agreement with the majority of the others, and the items on which annotators disagree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from alignkit.label.agreement import krippendorff_alpha, majority_agreement, pairwise_agreement
from alignkit.label.project import Project
from alignkit.label.store import LabelStore
from alignkit.label.tasks import TASKS


@dataclass
class TaskStats:
    task: str
    level: str
    labels: int  # finished labels
    items: int  # items with at least one label
    shared_items: int  # items with labels from 2 or more annotators
    alpha: float
    pairwise: float
    overlap: float | None  # mean span F1 over annotator pairs (spans only)
    by_annotator: dict[str, float] = field(default_factory=dict)  # agreement with the majority of the others
    disagreements: list[int] = field(default_factory=list)  # item ids


def task_stats(store: LabelStore, project: Project, name: str) -> TaskStats:
    task = TASKS[name]
    items = store.items()
    by_item: dict[int, dict[str, dict]] = defaultdict(dict)
    for annotator, item_id, value in store.labels(name):
        by_item[item_id][annotator] = value
    units: dict[tuple[int, str], dict[str, object]] = defaultdict(dict)
    for item_id, values in by_item.items():
        for annotator, value in values.items():
            for key, judgment in task.judgments(value, items[item_id], project.config).items():
                units[(item_id, key)][annotator] = judgment
    shared = {u: v for u, v in units.items() if len(v) >= 2}
    disagreements = sorted({item_id for (item_id, _), v in shared.items() if len(set(v.values())) > 1})
    overlaps = [task.overlap(a, b) for values in by_item.values() for a, b in combinations(values.values(), 2)
                ] if task.overlap else []
    annotators = sorted({a for values in by_item.values() for a in values})
    return TaskStats(
        task=name,
        level=task.level,
        labels=sum(len(v) for v in by_item.values()),
        items=len(by_item),
        shared_items=sum(len(v) >= 2 for v in by_item.values()),
        alpha=krippendorff_alpha([list(v.values()) for v in units.values()], task.level),
        pairwise=pairwise_agreement(shared),
        overlap=sum(overlaps) / len(overlaps) if overlaps else (math.nan if task.overlap else None),
        by_annotator={a: majority_agreement(shared, a) for a in annotators},
        disagreements=disagreements,
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def format_stats(stats: list[TaskStats], flagged: list[tuple], max_items: int = 20) -> str:
    lines = []
    for s in stats:
        lines.append(f"{s.task}: {s.labels} labels on {s.items} items ({s.shared_items} with 2+ annotators)")
        lines.append(f"  Krippendorff's alpha ({s.level}) {_fmt(s.alpha)}   pairwise agreement {_fmt(s.pairwise)}"
                     + (f"   span F1 {_fmt(s.overlap)}" if s.overlap is not None else ""))
        for a, v in s.by_annotator.items():
            lines.append(f"  {a:24s} agreement with the majority {_fmt(v)}")
        shown = ", ".join(map(str, s.disagreements[:max_items]))
        more = f" ... (+{len(s.disagreements) - max_items})" if len(s.disagreements) > max_items else ""
        lines.append(f"  items with disagreement: {len(s.disagreements)}" + (f": {shown}{more}" if shown else ""))
    lines.append(f"flagged: {len(flagged)}")
    for annotator, task, item_id, state, note in flagged:
        lines.append(f"  item {item_id} {task} by {annotator} ({state}){': ' + note if note else ''}")
    return "\n".join(lines)
