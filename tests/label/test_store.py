"""Import and assignment: each item to N annotators, never more; skips free the slot; data checked."""

import json

import pytest
from label_helpers import write_project

from alignkit.errors import ConfigError, DataError
from alignkit.label.importer import open_project
from alignkit.label.project import load_project
from alignkit.label.store import IMPORTED_PREFIX


def test_generate_output_and_ranked_rows_import(project):
    rows = [{"prompt": "p0", "responses": ["a", "b"]},  # generate without rewards
            {"prompt": "p1", "responses": ["c", "d", "e"], "scores": [0.1, 0.5, 0.2]}]  # with rewards
    p, store = project(rows)
    assert [len(i.responses) for i in store.items().values()] == [2, 3]


def test_chat_pairwise_rows_import_as_text(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "x", "rejected": "y"}]
    store = open_project(load_project(write_project(tmp_path, rows)))
    item = store.item(1)
    assert item.prompt == "user: hi" and item.responses == ["assistant: x", "assistant: y"]


def test_prompt_only_data_says_to_generate_first(project):
    with pytest.raises(DataError, match="alignkit generate"):
        project([{"prompt": "a"}, {"prompt": "b"}])


def test_changed_data_file_is_refused(tmp_path):
    path = write_project(tmp_path)
    open_project(load_project(path))
    (tmp_path / "samples.jsonl").write_text(json.dumps({"prompt": "new", "responses": ["a", "b"]}) + "\n")
    with pytest.raises(ConfigError, match="changed since"):
        open_project(load_project(path))


def test_each_item_goes_to_n_annotators_and_no_more(project):
    p, store = project(annotators_per_item=2)
    seen = {}
    for who in ("ann", "bob", "cy"):
        store.add_annotator(who)
        seen[who] = []
        while (item := store.next_item(who, "rank", 2)) is not None:
            assert store.next_item(who, "rank", 2) == item  # an open item is shown again until finished
            assert store.finish(who, "rank", item, {"ranks": [1, 2, 3, 4]}, False, "")
            seen[who].append(item)
    assert seen == {"ann": [1, 2, 3], "bob": [1, 2, 3], "cy": []}
    assert store.progress("cy", "rank", 2) == {"done": 0, "skipped": 0, "left": 0}
    assert not store.finish("ann", "rank", 1, {"ranks": [1, 1, 1, 1]}, False, "")  # no longer open


def test_a_skip_frees_the_slot_and_a_flag_is_listed(project):
    p, store = project(annotators_per_item=1)
    assert store.next_item("ann", "choose", 1) == 1
    assert store.finish("ann", "choose", 1, None, True, "garbled text")
    assert store.next_item("ann", "choose", 1) == 2  # never item 1 again for ann
    assert store.next_item("bob", "choose", 1) == 1  # the skipped slot is free for someone else
    assert store.flagged() == [("ann", "choose", 1, "skipped", "garbled text")]
    assert store.progress("ann", "choose", 1) == {"done": 0, "skipped": 1, "left": 2}


def test_tokens_are_secret_and_replaceable(project):
    p, store = project()
    first = store.add_annotator("ann")
    assert store.annotator_for_token(first) == "ann"
    second = store.add_annotator("ann")
    assert store.annotator_for_token(first) is None and store.annotator_for_token(second) == "ann"
    assert store.annotator_for_token("") is None
    with pytest.raises(ConfigError, match="annotator name"):
        store.add_annotator(f"{IMPORTED_PREFIX}x")
    with store.connect() as db:  # the database holds a hash, not the token
        assert second not in json.dumps(db.execute("SELECT * FROM annotators").fetchall())
