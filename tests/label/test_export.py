"""Exports that alignkit reads back as training data, with values worked out by hand, and the
qa-feedback round trip on the real file."""

import json

import pytest

from alignkit.data.examples import load_examples
from alignkit.label.export import export_rows, write_rows
from alignkit.label.importer import open_project
from alignkit.label.project import load_project
from alignkit.label.stats import task_stats


def label(store, who, task, value):
    item = store.next_item(who, task, 2)
    assert store.finish(who, task, item, value, False, "")
    return item


def test_ranked_export_keeps_ties_and_averages_annotators(project, tmp_path):
    p, store = project()
    label(store, "ann", "rank", {"ranks": [1, 2, 2, 4]})  # scores K - rank: [3, 2, 2, 0]
    label(store, "bob", "rank", {"ranks": [2, 1, 3, 4]})  # [2, 3, 1, 0]
    (row,) = export_rows(store, p, "ranked")
    assert row["scores"] == [2.5, 2.5, 1.5, 0.0] and row["annotators"] == 2  # means: a tie at the top
    per = export_rows(store, p, "ranked", per_annotator=True)
    assert [(r["annotator"], r["scores"]) for r in per] == [("ann", [3, 2, 2, 0]), ("bob", [2, 3, 1, 0])]
    write_rows(per, tmp_path / "ranked.jsonl", "ranked")
    examples = load_examples(tmp_path / "ranked.jsonl")
    assert [ex.scores for ex in examples] == [[3, 2, 2, 0], [2, 3, 1, 0]]
    assert examples[0].responses == store.item(1).responses


def test_pairwise_export_from_choices(project):
    p, store = project()
    item = label(store, "ann", "choose", {"choice": "A", "pair": [2, 0]})
    label(store, "bob", "choose", {"choice": "A", "pair": [2, 0]})
    responses = store.item(item).responses
    assert export_rows(store, p, "pairwise") == [
        {"prompt": store.item(item).prompt, "chosen": responses[2], "rejected": responses[0]}]
    label(store, "ann", "choose", {"choice": "B", "pair": [0, 1]})
    label(store, "bob", "choose", {"choice": "tie", "pair": [0, 1]})  # 1 of 2 votes: no strict majority
    assert len(export_rows(store, p, "pairwise")) == 1
    assert len(export_rows(store, p, "pairwise", per_annotator=True)) == 3


def test_stats_by_hand(project):
    """Two annotators rank item 1: ann [1, 2, 3, 4], bob [1, 2, 4, 3]. Of the 6 response pairs they
    agree on 5 (pair 3-4 flips): pairwise agreement 5/6, and items with disagreement = [1]."""
    p, store = project()
    label(store, "ann", "rank", {"ranks": [1, 2, 3, 4]})
    label(store, "bob", "rank", {"ranks": [1, 2, 4, 3]})
    s = task_stats(store, p, "rank")
    assert s.pairwise == pytest.approx(5 / 6) and s.disagreements == [1]
    assert s.by_annotator == {"ann": pytest.approx(5 / 6), "bob": pytest.approx(5 / 6)}
    # judgments +1 five times each and -1/+1 on one unit: ordinal alpha over values {-1, +1}
    assert s.alpha < 0.5
    label(store, "ann", "spans", {"errors": [{"error type": "Irrelevant", "explanation": "", "start": 0, "end": 6}],
                                  "missing-info": []})
    label(store, "bob", "spans", {"errors": [{"error type": "Irrelevant", "explanation": "", "start": 0, "end": 3}],
                                  "missing-info": []})
    assert task_stats(store, p, "spans").overlap == pytest.approx(2 * 3 / (6 + 3))


def test_qa_feedback_file_round_trips_unchanged(shared_data, tmp_path):
    source = shared_data / "qa-feedback" / "dev_feedback.json"
    (tmp_path / "project.yaml").write_text(f"data: {source}\ntasks: [rank, spans]\n")
    p = load_project(tmp_path / "project.yaml")
    store = open_project(p)
    rows = export_rows(store, p, "qa_feedback")
    write_rows(rows, tmp_path / "out.json", "qa_feedback")
    original = json.loads(source.read_text())
    assert json.loads((tmp_path / "out.json").read_text()) == original
    assert len(load_examples(tmp_path / "out.json", format="qa_feedback")) == len(original)
    # the imported feedback counts as an annotator, so new span labels are compared with it
    s = task_stats(store, p, "spans")
    assert s.labels == len(original) and list(s.by_annotator) == ["import:qa-feedback"]
