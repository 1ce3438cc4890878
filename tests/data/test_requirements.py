"""Every trainer checks that its data has what the method needs, naming the first bad FILE:LINE."""

from __future__ import annotations

import json

import pytest

from alignkit.config import load_config
from alignkit.data.examples import load_examples
from alignkit.data.requirements import NEED_OF_DATA, NEEDS, check_examples
from alignkit.data.schema import Example
from alignkit.errors import DataError
from alignkit.losses import LOSSES
from alignkit.train.run import run_train


def write_jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_needs_responses_and_names_the_first_prompt_only_row(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "a"}, {"prompt": "b"}])
    with pytest.raises(DataError, match=rf"^{path}:1: has no response to train on \(only a prompt\); method 'sft'"):
        check_examples(load_examples(path), "responses", method="sft")


def test_kto_needs_completions_and_labels(tmp_path):
    prompts = write_jsonl(tmp_path, [{"prompt": "a"}], "p.jsonl")
    with pytest.raises(DataError, match=rf"^{prompts}:1: has no completion to label"):
        check_examples(load_examples(prompts), "labels", method="kto")
    sft = write_jsonl(tmp_path, [{"prompt": "a", "completion": "b"}], "s.jsonl")
    with pytest.raises(DataError, match=rf"^{sft}:1: has neither a desirable/undesirable label nor a preference"):
        check_examples(load_examples(sft), "labels", method="kto")
    # unpaired rows and pairwise rows both do
    check_examples([Example("p", ["a"], scores=[1.0], desirable=[True])], "labels", method="kto")
    check_examples([Example("p", ["a", "b"], scores=[1.0, 0.0])], "labels", method="kto")


def test_preference_methods_need_a_preference_on_every_row(tmp_path):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    # row 2 is an SFT row in a pairwise file: format auto makes it a bad row already ...
    path = write_jsonl(tmp_path, [good, {"prompt": "q", "completion": "c"}])
    with pytest.raises(DataError, match=rf"{path}:2: has the columns of format sft but the file is format pairwise"):
        load_examples(path)
    # ... and read as SFT data (named format), the requirement names row 1
    sft = write_jsonl(tmp_path, [{"prompt": "q", "completion": "c"}], "s.jsonl")
    with pytest.raises(DataError, match=rf"^{sft}:1: has no preference \(1 response, no scores\); method 'dpo'"):
        check_examples(load_examples(sft), "preferences", method="dpo")


def test_ties_on_some_rows_are_fine_but_not_on_all():
    tied = Example("p", ["a", "b"], scores=[1.0, 1.0], source="f:1")
    check_examples([tied, Example("p", ["a", "b"], scores=[1.0, 0.0])], "preferences", method="dpo")
    with pytest.raises(DataError, match=r"^f:1: every row's responses tie"):
        check_examples([tied], "preferences", method="dpo")


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_loss_declares_a_known_data_need(method):
    assert NEED_OF_DATA[LOSSES[method].data] in NEEDS


def run_config(tmp_path, method, data, *extra):
    return load_config(None, [
        f"method={method}", "model.name_or_path=tiny-llama", f"data.train={data}", "train.max_steps=1",
        f"train.output_dir={tmp_path / 'run'}", "train.progress=false", *extra,
    ])


def test_sft_on_prompt_only_data_stops_before_training(tmp_path):
    """Used to train at loss 0 and report success."""
    path = write_jsonl(tmp_path, [{"prompt": f"p{i}"} for i in range(4)])
    with pytest.raises(DataError, match=rf"^{path}:1: has no response"):
        run_train(run_config(tmp_path, "sft", path))
    assert not (tmp_path / "run" / "final").exists()


def test_sft_file_whose_first_line_lacks_completion_names_that_line(tmp_path):
    """Used to be read as prompt-only data (format guessed from line 1) and train at loss 0."""
    rows = [{"prompt": "p0"}] + [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(1, 4)]
    path = write_jsonl(tmp_path, rows)
    with pytest.raises(DataError) as err:
        run_train(run_config(tmp_path, "sft", path))
    assert str(err.value).splitlines()[0] == (
        f"{path}:1: has the columns of format prompt but the file is format sft (like {path}:2); "
        "fix the row, or set data.format"
    )


def test_kto_on_prompt_only_data_names_the_row_instead_of_an_index_error(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": f"p{i}"} for i in range(4)])
    with pytest.raises(DataError, match=rf"^{path}:1: has no completion to label"):
        run_train(run_config(tmp_path, "kto", path))
