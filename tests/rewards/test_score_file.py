"""score_file: every response of a file scored, rows written back with `scores`."""

import json

import pytest

from alignkit.errors import DataError
from alignkit.rewards.base import Reward
from alignkit.rewards.score_file import score_file
from alignkit.rewards.simple import LengthReward


class Recorder(Reward):
    """Scores a pair by the length of 'prompt|response' and records the texts it saw."""

    name = "recorder"

    def __init__(self):
        self.seen = []

    def score(self, prompts, responses):
        import torch

        self.seen.extend(zip(prompts, responses))
        return torch.tensor([float(len(p) + len(r)) for p, r in zip(prompts, responses)])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_row_shape_gets_one_score_per_response(tmp_path):
    rows = [
        {"prompt": "Q", "responses": ["a", "bb", "ccc"], "id": 7},
        {"prompt": "Q", "response": "dddd"},
        {"prompt": "Q", "completion": "ee"},
        {"prompt": "Q", "chosen": "good answer", "rejected": "bad"},
        {"prompt": "Q", "responses": []},
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "sub" / "out.jsonl"
    assert score_file(LengthReward(unit="chars"), data, out, progress=False) == 5
    written = read_jsonl(out)
    assert [r["scores"] for r in written] == [[1.0, 2.0, 3.0], [4.0], [2.0], [11.0, 3.0], []]
    assert written[0]["id"] == 7 and written[3]["chosen"] == "good answer"  # rows are kept as they were


def test_chat_rows_are_rendered_as_role_lines(tmp_path):
    prompt = [{"role": "user", "content": "Hi"}]
    response = [{"role": "assistant", "content": "Hello"}]
    data = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": prompt, "responses": [response]}])
    reward = Recorder()
    score_file(reward, data, tmp_path / "out.jsonl", progress=False)
    assert reward.seen == [("user: Hi", "assistant: Hello")]
    assert read_jsonl(tmp_path / "out.jsonl")[0]["scores"] == [len("user: Hi") + len("assistant: Hello")]


def test_hh_rlhf_pairs_are_split_at_the_last_assistant_turn(tmp_path):
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello there",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away",
    }
    data = write_jsonl(tmp_path / "hh.jsonl", [row])
    reward = Recorder()
    score_file(reward, data, tmp_path / "out.jsonl", progress=False)
    assert reward.seen == [
        ("\n\nHuman: Hi\n\nAssistant:", " Hello there"),
        ("\n\nHuman: Hi\n\nAssistant:", " Go away"),
    ]


def test_a_row_without_responses_names_its_line(tmp_path):
    data = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "ok", "response": "x"}, {"prompt": "only a prompt"}]
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no responses"):
        score_file(LengthReward(), data, tmp_path / "out.jsonl", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_response_of_the_wrong_type_names_its_line(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["fine", 3]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: response 2 must be a string"):
        score_file(LengthReward(), data, tmp_path / "out.jsonl", progress=False)
