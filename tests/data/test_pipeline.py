"""The data pipeline: a run tokenizes the training rows it uses, in the data order of the whole file."""

import json

import pytest

from alignkit.config import TrainConfig, load_config
from alignkit.data.pipeline import TokenizedRows, load_tokenized
from alignkit.data.tokenize import tokenize_examples
from alignkit.errors import DataError
from alignkit.models.tiny import EOS, build_tiny_tokenizer
from alignkit.train.runtime import used_indices


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def write_pairs(path, n, bad=()):
    """``n`` pairwise rows; in rows ``bad`` the rejected response is the EOS text alone: a row that passes
    loading (a non-empty string) and is found bad only when tokenized (no token before the EOS)."""
    with path.open("w") as f:
        for i in range(n):
            rejected = EOS if i in bad else f"bad answer {i}"
            row = {"prompt": f"question number {i}?", "chosen": f"good answer {i}", "rejected": rejected}
            f.write(json.dumps(row) + "\n")
    return path


def data_config(path, *overrides):
    return load_config(None, ["method=dpo", "model.name_or_path=tiny-llama", f"data.train={path}",
                              "data.max_length=64", *overrides]).data


class CountingTokenizer:
    """The tiny tokenizer, counting the texts it encodes."""

    def __init__(self, tok):
        self.tok, self.texts = tok, 0

    def __call__(self, text, *args, **kwargs):
        self.texts += len(text) if isinstance(text, list) else 1
        return self.tok(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def test_a_two_step_run_on_a_big_file_tokenizes_only_its_rows(tmp_path, tok):
    path = write_pairs(tmp_path / "big.jsonl", 5000, bad={4999})  # an unused bad row is never tokenized
    cfg = TrainConfig(batch_size=4, max_steps=2, seed=3)
    counting = CountingTokenizer(tok)
    train, held_out = load_tokenized(data_config(path), counting, used=lambda n: used_indices(cfg, n, 1))
    assert isinstance(train, TokenizedRows) and len(train) == 5000 and held_out == []
    assert sorted(train.done) == sorted(used_indices(cfg, 5000, 1)) and len(train.done) == 8
    assert counting.texts == 8 * 3  # a prompt and two responses per used row, nothing else
    assert train[7].prompt_ids == tokenize_examples([train.examples[7]], tok)[0].prompt_ids  # others: when read
    with pytest.raises(DataError, match=r"big.jsonl:5000: response 1 is empty"):
        train[4999]  # FILE:LINE when a bad row is read


def test_lazy_rows_equal_the_whole_file_tokenized(tmp_path, tok):
    path = write_pairs(tmp_path / "pairs.jsonl", 40)
    lazy, _ = load_tokenized(data_config(path), tok, used=lambda n: [5, 1])
    eager, _ = load_tokenized(data_config(path), tok)
    assert isinstance(eager, list) and len(lazy) == len(eager) == 40
    assert list(lazy) == eager and lazy[-3:] == eager[-3:]


def test_a_used_bad_row_stops_the_run_before_it_starts_with_its_file_and_line(tmp_path, tok):
    path = write_pairs(tmp_path / "pairs.jsonl", 10, bad={3})
    with pytest.raises(DataError, match=r"pairs.jsonl:4: response 1 is empty"):
        load_tokenized(data_config(path), tok, used=lambda n: range(n))


def test_skipping_a_used_bad_row_tokenizes_every_row_as_before(tmp_path, tok):
    """Skipping changes the number of rows and so the data order: the set is the whole file tokenized
    with the bad rows dropped, exactly what it was without lazy tokenization."""
    path = write_pairs(tmp_path / "pairs.jsonl", 10, bad={3})
    skip = data_config(path, "data.skip_bad_rows=true")
    train, _ = load_tokenized(skip, tok, used=lambda n: [0, 3])
    eager, _ = load_tokenized(skip, tok)
    assert isinstance(train, list) and train == eager and len(train) == 9


def test_dropping_long_prompts_tokenizes_every_row(tmp_path, tok):
    path = write_pairs(tmp_path / "pairs.jsonl", 10)
    train, _ = load_tokenized(data_config(path, "data.drop_long_prompts=true"), tok, used=lambda n: [0])
    assert isinstance(train, list) and len(train) == 10


def test_split_seed_holds_out_the_same_rows_whatever_the_run_seed(tmp_path):
    from alignkit.config.sections import DataConfig
    from alignkit.data.pipeline import load_split

    data = DataConfig(train=str(write_pairs(tmp_path / "pairs.jsonl", 20)), eval_size=5)
    held = {s: [ex.prompt for ex in load_split(data, seed=s)[1]] for s in (0, 1)}
    assert held[0] != held[1]  # without split_seed the run's seed draws the held-out rows
    data.split_seed = 0
    assert [ex.prompt for ex in load_split(data, seed=1)[1]] == held[0]
