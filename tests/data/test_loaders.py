"""read_rows: every container yields (row, location); whole-file problems raise DataError."""

from __future__ import annotations

import gzip
import json

import pytest

from alignkit.data.loaders import BadRow, read_rows
from alignkit.errors import DataError

ROWS = [{"prompt": "a", "n": 1}, {"prompt": "b", "n": 2}, {"prompt": "c", "n": 3}]


def rows_of(path, **kw):
    return list(read_rows(path, **kw))


def test_jsonl_locations_are_one_based_lines_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n   \n" + json.dumps(ROWS[2]) + "\n"
    )
    got = rows_of(path)
    assert [r for r, _ in got] == ROWS
    assert [loc for _, loc in got] == [f"{path}:1", f"{path}:3", f"{path}:5"]


def test_jsonl_line_numbers_survive_raw_unicode_line_separators_and_crlf(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "a\u2028b\x0cc"}, {"prompt": "d"}]
    path.write_bytes("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode())
    assert rows_of(path) == [(rows[0], f"{path}:1"), (rows[1], f"{path}:2")]


def test_jsonl_invalid_line_is_a_bad_row_not_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"prompt": oops}\n[1, 2]\n')
    (r1, l1), (r2, l2), (r3, l3) = rows_of(path)
    assert r1 == ROWS[0] and l1 == f"{path}:1"
    assert isinstance(r2, BadRow) and l2 == f"{path}:2" and r2.reason.startswith("invalid JSON (")
    assert isinstance(r3, BadRow) and l3 == f"{path}:3" and "expected a JSON object, got list" in r3.reason


def test_json_list_locations_are_zero_based_indices(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2))
    got = rows_of(path)
    assert [r for r, _ in got] == ROWS
    assert [loc for _, loc in got] == [f"{path}:[0]", f"{path}:[1]", f"{path}:[2]"]


def test_json_object_with_the_list_under_a_single_key(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS}))
    assert [r for r, _ in rows_of(path)] == ROWS


def test_json_single_chat_row_is_one_row_not_a_list_of_rows(tmp_path):
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(row))
    assert rows_of(path) == [(row, f"{path}:[0]")]


def test_json_lines_content_in_a_json_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    got = rows_of(path)
    assert [r for r, _ in got] == ROWS
    assert got[2][1] == f"{path}:3"


def test_broken_json_list_is_a_file_error_with_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"prompt": "a"},\n {"prompt": }\n]')
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        rows_of(path)


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    got = rows_of(path)
    assert [r for r, _ in got] == ROWS
    assert got[1][1] == f"{path}:[1]"


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.json.gz", "d.jsonl", "no_suffix"])
def test_gzip_is_detected_by_magic_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in ROWS).encode()))
    got = rows_of(path)
    assert [r for r, _ in got] == ROWS
    assert got[0][1] == f"{path}:1"


def test_gzipped_json_list(tmp_path):
    path = tmp_path / "d.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"rows": ROWS}).encode()))
    assert [loc for _, loc in rows_of(path)] == [f"{path}:[0]", f"{path}:[1]", f"{path}:[2]"]


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "a"}\n' * 100)[:30])
    with pytest.raises(DataError, match="cannot read gzip data"):
        rows_of(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.jsonl", b""),
        ("d.jsonl", b"\n  \n"),
        ("d.json", b"[]"),
        ("d.json", b""),
        ("d.json", b'{"data": []}'),
        ("d.jsonl.gz", gzip.compress(b"")),
    ],
)
def test_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^{path}: no rows$"):
        rows_of(path)


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=rf"^{path}:3: not UTF-8 text \(invalid start byte at byte 44\)"):
        rows_of(path)


def test_damaged_parquet_is_a_data_error_not_an_os_error(tmp_path):
    """4 KB overwritten in the middle of the file: the footer reads, a page does not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"{i} " + "p" * 60, "chosen": "a" * 40, "rejected": "b" * 40} for i in range(2000)]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"Z" * 4096
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^{path}:\[\d+\]: damaged parquet data at or after row \d+ \("):
        rows_of(path)
    path.write_bytes(bytes(data[:-12]) + b"garbled!PAR1")  # a damaged footer
    with pytest.raises(DataError, match=rf"^{path}: cannot read parquet \("):
        rows_of(path)


def test_saved_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    got = rows_of(tmp_path / "ds")
    assert [r for r, _ in got] == ROWS
    assert got[2][1] == f"{tmp_path / 'ds'}:[2]"


def test_saved_dataset_dict_picks_the_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(rows_of(tmp_path / "dd")) == 3
    assert [r for r, _ in rows_of(tmp_path / "dd", split="test")] == ROWS[:1]
    with pytest.raises(DataError, match="no split 'dev'; it has train, test"):
        rows_of(tmp_path / "dd", split="dev")


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        rows_of(tmp_path)


@pytest.mark.parametrize("name", ["missing.jsonl", "./missing", "a/b/c"])
def test_missing_local_path_is_not_tried_on_the_hub(tmp_path, monkeypatch, name):
    import datasets

    def fail(*a, **k):
        raise AssertionError("must not reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError, match="no such file or folder"):
        rows_of(name if name.startswith(("./", "a/")) else tmp_path / name)


def test_hub_id_loads_the_split(monkeypatch):
    import datasets

    calls = []

    def fake_load(dataset_id, split):
        calls.append((dataset_id, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = rows_of("org/prefs", split="test")
    assert calls == [("org/prefs", "test")]
    assert [r for r, _ in got] == ROWS
    assert got[0][1] == "org/prefs:[0]"


def test_hub_unreachable_says_what_to_do(monkeypatch):
    import datasets

    def offline(dataset_id, split):
        raise ConnectionError("Couldn't reach 'org/prefs' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        rows_of("org/prefs")
    msg = str(err.value)
    assert msg.startswith(
        "org/prefs: does not exist locally and could not be loaded from the Hugging Face Hub"
    )
    assert "ConnectionError: Couldn't reach" in msg and "more" not in msg
    assert "download the data and pass a local file" in msg
