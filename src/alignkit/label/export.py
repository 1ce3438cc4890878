"""``alignkit label export``: labels to files that ``alignkit train`` reads as they are.

- ``ranked`` jsonl ``{prompt, responses, scores}`` (higher is better, equal scores are ties)
  from a task with scores (rank: ``K - rank``; rate: the 1-7 rating). Aggregated: one row per
  item, the mean score over its annotators; per annotator: one row per label, ``annotator`` added.
- ``pairwise`` jsonl ``{prompt, chosen, rejected}`` from a task with preferences (choose: A or B;
  rank: every ordered pair). Aggregated: pairs that a strict majority of the item's annotators
  prefer; per annotator: every pair of every label. Ties and "both bad" give no pair.
- ``qa_feedback`` json: the Fine-Grained RLHF qa-feedback rows (``question``, ``passages``,
  ``gold``, ``prediction 1..K``, ``preference``, ``feedback``). ``feedback.errors`` and
  ``feedback.missing-info`` are the spans labels (aggregated: the entries a strict majority of the
  item's annotators marked identically, in the order first marked); ``preference`` comes from the
  rank labels when there are any. A qa-feedback file imported and exported comes back unchanged.

Prompts and responses are written as the data file held them (strings or chat messages).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from alignkit.errors import ConfigError
from alignkit.label.importer import _convert
from alignkit.label.project import Project
from alignkit.label.store import LabelStore
from alignkit.label.tasks import TASKS, Item

EXPORT_FORMATS = ("ranked", "pairwise", "qa_feedback")


def _example(item: Item):
    return _convert(item.row, f"item {item.id}", item.format)


def _labels_by_item(store: LabelStore, task: str) -> dict[int, dict[str, dict]]:
    by_item: dict[int, dict[str, dict]] = defaultdict(dict)
    for annotator, item_id, value in store.labels(task):
        by_item[item_id][annotator] = value
    return by_item


def _source_task(project: Project, task: str | None, capability: str, default: str) -> str:
    tasks = project.config.tasks
    name = task or (default if default in tasks else next((t for t in tasks if getattr(TASKS[t], capability)), default))
    if name not in TASKS or getattr(TASKS[name], capability) is None:
        able = [t for t in TASKS if getattr(TASKS[t], capability)]
        raise ConfigError(f"--task {name}: this export needs a task with {capability}: one of {', '.join(able)}")
    return name


def export_ranked(store: LabelStore, project: Project, task: str | None = None,
                  per_annotator: bool = False) -> list[dict]:
    name = _source_task(project, task, "scores", "rank")
    scores_of = TASKS[name].scores
    items = store.items()
    rows = []
    for item_id, values in _labels_by_item(store, name).items():
        ex = _example(items[item_id])
        all_scores = {a: scores_of(v) for a, v in values.items()}
        if per_annotator:
            rows += [{"prompt": ex.prompt, "responses": ex.responses, "scores": s, "annotator": a}
                     for a, s in all_scores.items()]
        else:
            mean = [sum(col) / len(col) for col in zip(*all_scores.values())]
            rows.append({"prompt": ex.prompt, "responses": ex.responses, "scores": mean,
                         "annotators": len(all_scores)})
    return rows


def export_pairwise(store: LabelStore, project: Project, task: str | None = None,
                    per_annotator: bool = False) -> list[dict]:
    name = _source_task(project, task, "preferences", "choose")
    preferences_of = TASKS[name].preferences
    items = store.items()
    rows = []
    for item_id, values in _labels_by_item(store, name).items():
        ex = _example(items[item_id])
        votes: dict[tuple[int, int], list[str]] = defaultdict(list)
        for annotator, value in values.items():
            for pair in preferences_of(value):
                votes[pair].append(annotator)
        for (better, worse), who in votes.items():
            row = {"prompt": ex.prompt, "chosen": ex.responses[better], "rejected": ex.responses[worse]}
            if per_annotator:
                rows += [{**row, "annotator": a} for a in who]
            elif 2 * len(who) > len(values):
                rows.append(row)
    return rows


def _majority_entries(labels: list[dict], key: str) -> list[dict]:
    """Entries of ``labels[*][key]`` that a strict majority of the labels hold, in first-marked order."""
    seen: list[dict] = []
    for value in labels:
        for entry in value.get(key, []):
            if entry not in seen:
                seen.append(entry)
    return [e for e in seen if 2 * sum(e in v.get(key, []) for v in labels) > len(labels)]


def _preference(scores: list[float]) -> list[int]:
    """qa-feedback's pair judgments (1v2, 1v3, ..., in order): 1 first better, 2 second, 0 neither."""
    return [1 if scores[i] > scores[j] else 2 if scores[j] > scores[i] else 0
            for i, j in combinations(range(len(scores)), 2)]


def _qa_base(item: Item) -> dict:
    if item.format == "qa_feedback":
        return dict(item.row)
    row = {"question": item.prompt, "passages": []}
    row.update({f"prediction {i}": r for i, r in enumerate(item.responses, start=1)})
    return row


def export_qa_feedback(store: LabelStore, project: Project, per_annotator: bool = False) -> list[dict]:
    if project.config.span_response != 1:
        raise ConfigError(f"{project.path}: span_response: qa-feedback marks errors in prediction 1; "
                          "this project marks another response")
    items = store.items()
    spans = _labels_by_item(store, "spans")
    rank_name = next((t for t in project.config.tasks if TASKS[t].scores), None)
    ranks = _labels_by_item(store, rank_name) if rank_name else {}
    rows = []
    for item in items.values():
        row = _qa_base(item)
        k = sum(1 for key in row if key.startswith("prediction "))
        if item.id in ranks and len(item.responses) == k:
            all_scores = [TASKS[rank_name].scores(v) for v in ranks[item.id].values()]
            row["preference"] = _preference([sum(c) / len(c) for c in zip(*all_scores)])
        row.setdefault("preference", [0] * (k * (k - 1) // 2))
        original = row.get("feedback") or {}
        corrected = original.get("corrected-prediction", row.get("prediction 1", ""))
        labels = spans.get(item.id, {})
        if per_annotator:
            for annotator, value in labels.items():
                feedback = {"errors": value["errors"], "missing-info": value["missing-info"],
                            "corrected-prediction": corrected}
                rows.append({**row, "feedback": feedback, "annotator": annotator})
            continue
        if labels:
            values = list(labels.values())
            row["feedback"] = {"errors": _majority_entries(values, "errors"),
                               "missing-info": _majority_entries(values, "missing-info"),
                               "corrected-prediction": corrected}
        rows.append(row)
    return rows


def export_rows(store: LabelStore, project: Project, fmt: str, task: str | None = None,
                per_annotator: bool = False) -> list[dict]:
    if fmt == "ranked":
        return export_ranked(store, project, task, per_annotator)
    if fmt == "pairwise":
        return export_pairwise(store, project, task, per_annotator)
    if fmt == "qa_feedback":
        return export_qa_feedback(store, project, per_annotator)
    raise ConfigError(f"--format {fmt}: choose one of {', '.join(EXPORT_FORMATS)}")


def write_rows(rows: list[dict], path: Path, fmt: str) -> None:
    """jsonl for ranked and pairwise, one JSON list for qa-feedback (as its own files are); atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if fmt == "qa_feedback":
            json.dump(rows, f, ensure_ascii=False)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)
