"""load_examples' loading rules (bad-row policy, detection by majority, containers, max_rows) and
split_train_eval; what each format's converter does is in tests/data/test_formats.py."""

from __future__ import annotations

import json
import logging

import pytest

from alignkit.data.examples import load_examples, split_train_eval
from alignkit.data.schema import Example
from alignkit.errors import ConfigError, DataError


def write_jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_bad_rows_are_listed_up_to_five_with_the_total_and_the_hint(tmp_path):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    rows = [good] + [{"prompt": "p", "chosen": "a", "rejected": "a"}] * 7 + [good]
    path = write_jsonl(tmp_path, rows)
    path.write_text(path.read_text() + "not json\n")  # line 10
    with pytest.raises(DataError) as err:
        load_examples(path)
    lines = str(err.value).splitlines()
    assert lines[:5] == [f"{path}:{n}: chosen and rejected are identical" for n in range(2, 7)]
    assert lines[5] == "... and 3 more"
    assert (
        lines[6] == f"8 bad rows of 10 in {path} (format pairwise); set data.skip_bad_rows: true to skip them"
    )


def test_invalid_json_line_is_a_bad_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p"}\n{"prompt": "q"\n')
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON \("):
        load_examples(path)


def test_skip_bad_rows_logs_the_count(tmp_path):
    rows = [{"prompt": "p"}, {"prompt": ""}, {"prompt": "q"}, {"prompt": 3}, {"prompt": "r"}]
    path = write_jsonl(tmp_path, rows)
    logs = []
    exs = load_examples(path, skip_bad_rows=True, log=logs.append)
    assert [ex.prompt for ex in exs] == ["p", "q", "r"]
    assert [ex.source for ex in exs] == [f"{path}:1", f"{path}:3", f"{path}:5"]
    assert logs == [f"skipped 2 bad rows of 5 in {path} (first: {path}:2: prompt is empty)"]


def test_skip_bad_rows_logs_through_logging_by_default(tmp_path, caplog):
    path = write_jsonl(tmp_path, [{"prompt": "p"}, {"prompt": ""}])
    with caplog.at_level(logging.WARNING, logger="alignkit.data.examples"):
        assert len(load_examples(path, skip_bad_rows=True)) == 1
    assert f"skipped 1 bad rows of 2 in {path}" in caplog.text


@pytest.mark.parametrize("skip", [False, True])
def test_a_file_of_only_bad_rows_is_an_error_even_when_skipping(tmp_path, skip):
    path = write_jsonl(tmp_path, [{"prompt": ""}, {"prompt": " "}])
    with pytest.raises(DataError) as err:
        load_examples(path, skip_bad_rows=skip)
    assert str(err.value).splitlines() == [
        f"{path}:1: prompt is empty",
        f"{path}:2: prompt is empty",
        f"{path}: all 2 rows are bad (format prompt)",
    ]


def test_the_named_format_wins_over_detection(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    (ex,) = load_examples(path, format="prompt")
    assert ex.responses == []
    with pytest.raises(DataError, match=rf"{path}:1: missing field 'responses'"):
        load_examples(path, format="ranked")


def test_unknown_format_and_bad_max_rows_are_config_errors(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "p"}])
    with pytest.raises(ConfigError, match="unknown format 'dpo'"):
        load_examples(path, format="dpo")
    with pytest.raises(ConfigError, match="max_rows"):
        load_examples(path, max_rows=0)


def test_max_rows_counts_examples(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": str(i)} for i in range(10)])
    assert [ex.prompt for ex in load_examples(path, max_rows=3)] == ["0", "1", "2"]


def test_loads_from_every_container(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    for path in [tmp_path / "d.parquet", tmp_path / "ds", tmp_path / "d.json"]:
        exs = load_examples(path)
        assert [ex.responses for ex in exs] == [["a", "b"], ["c", "d"]]
        assert exs[1].source == f"{path}:[1]"


def test_undetectable_first_row_is_an_error_naming_the_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('not json\n{"input": "p", "output": "c"}\n')
    with pytest.raises(
        DataError, match=rf"^{path}:2: cannot tell the format from the columns \['input', 'output'\]"
    ):
        load_examples(path)


def test_split_train_eval_is_deterministic_disjoint_and_ordered():
    exs = [Example(str(i)) for i in range(20)]
    train, evals = split_train_eval(exs, eval_fraction=0.25, seed=3)
    assert len(evals) == 5 and len(train) == 15
    assert sorted(ex.prompt for ex in train + evals) == sorted(ex.prompt for ex in exs)
    assert [int(ex.prompt) for ex in evals] == sorted(int(ex.prompt) for ex in evals)
    assert split_train_eval(exs, eval_fraction=0.25, seed=3) == (train, evals)
    assert split_train_eval(exs, eval_fraction=0.25, seed=4)[1] != evals
    assert split_train_eval(exs, eval_size=5, seed=3)[1] == evals
    assert len(split_train_eval(exs, eval_fraction=0.01)[1]) == 1  # at least one


@pytest.mark.parametrize(
    "kw",
    [{}, {"eval_fraction": 0.1, "eval_size": 1}, {"eval_fraction": 1.0}, {"eval_size": 4}, {"eval_size": 0}],
)
def test_split_train_eval_rejects_bad_sizes(kw):
    with pytest.raises(ConfigError):
        split_train_eval([Example(str(i)) for i in range(4)], **kw)


def test_the_format_most_rows_have_wins_and_other_rows_are_bad(tmp_path):
    rows = [{"prompt": "p"}, {"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert str(err.value).splitlines()[0] == (
        f"{path}:1: has the columns of format prompt but the file is format sft (like {path}:2); "
        "fix the row, or set data.format"
    )
    exs = load_examples(path, skip_bad_rows=True, log=lambda msg: None)
    assert [ex.responses for ex in exs] == [["b"], ["d"]]
