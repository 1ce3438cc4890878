"""Every format's converter: each becomes Examples, and every bad row is reported as FILE:LINE."""

from __future__ import annotations

import json

import pytest

from alignkit.data.examples import load_examples
from alignkit.data.formats import FORMATS, BadRow, detect_format
from alignkit.data.schema import Example
from alignkit.errors import DataError


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def write_jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def load_one(tmp_path, row, **kw):
    (ex,) = load_examples(write_jsonl(tmp_path, [row]), **kw)
    return ex


def bad_reason(tmp_path, row, format="auto"):
    """The message for a file of one good row then ``row``: it must name line 2."""
    good = {"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]} if format == "ranked" else None
    path = write_jsonl(tmp_path, [row] if good is None else [good, row])
    with pytest.raises(DataError) as err:
        load_examples(path, format=format)
    first = str(err.value).splitlines()[0]
    line = 1 if good is None else 2
    assert first.startswith(f"{path}:{line}: "), first
    return first[len(f"{path}:{line}: ") :]


# 1. Formats, good rows ------------------------------------------------------------


def test_registry_names():
    assert set(FORMATS) == {"pairwise", "hh_rlhf", "ranked", "qa_feedback", "span_feedback", "unpaired", "prompt", "sft"}


def test_pairwise_strings(tmp_path):
    ex = load_one(tmp_path, {"prompt": "2+2?", "chosen": " 4", "rejected": " 5"})
    assert ex == Example("2+2?", [" 4", " 5"], scores=[1.0, 0.0], source=f"{tmp_path / 'd.jsonl'}:1")


def test_pairwise_explicit_chat(tmp_path):
    row = {"prompt": [user("hi")], "chosen": [bot("hello")], "rejected": [bot("go away")]}
    ex = load_one(tmp_path, row)
    assert ex.prompt == [user("hi")] and ex.responses == [[bot("hello")], [bot("go away")]]
    assert ex.scores == [1.0, 0.0] and ex.is_chat()


def test_string_responses_under_a_chat_prompt_become_assistant_messages(tmp_path):
    ex = load_one(tmp_path, {"prompt": [user("hi")], "chosen": "hello", "rejected": [bot("go away")]})
    assert ex.responses == [[bot("hello")], [bot("go away")]]
    ex = load_one(tmp_path, {"prompt": [user("hi")], "completion": "hello"})
    assert ex.responses == [[bot("hello")]]


def test_pairwise_implicit_chat_prompt_is_the_shared_leading_messages(tmp_path):
    shared = [user("hi"), bot("hello"), user("joke?")]
    row = {"chosen": [*shared, bot("knock knock")], "rejected": [*shared, bot("no")]}
    ex = load_one(tmp_path, row)
    assert ex.prompt == shared
    assert ex.responses == [[bot("knock knock")], [bot("no")]]


def test_hh_rlhf_splits_at_the_last_assistant_turn_keeping_the_space(tmp_path):
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant:"
    row = {"chosen": prompt + " Sure.", "rejected": prompt + " No."}
    ex = load_one(tmp_path, row)
    assert ex.prompt == prompt
    assert ex.responses == [" Sure.", " No."] and ex.scores == [1.0, 0.0]
    assert ex.prompt + ex.responses[0] == row["chosen"]


def test_ranked_scores_with_ties_and_varying_k(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.5, 2, 0.5]},
        {"prompt": "q", "responses": ["a", "b", "c", "d", "e"], "scores": [1, 2, 3, 4, 5]},
    ]
    exs = load_examples(write_jsonl(tmp_path, rows))
    assert exs[0].scores == [0.5, 2.0, 0.5] and exs[0].ranked() == [1, 0, 2]
    assert exs[1].num_responses == 5


def test_ranked_from_ranking(tmp_path):
    ex = load_one(tmp_path, {"prompt": "p", "ranking": ["best", "mid", "worst"]})
    assert ex.responses == ["best", "mid", "worst"] and ex.scores == [2.0, 1.0, 0.0]


def test_ranked_drops_later_duplicates_and_notes_them(tmp_path):
    logs = []
    path = write_jsonl(tmp_path, [{"prompt": "p", "responses": ["a", "b", "a", "c"], "scores": [1, 3, 9, 0]}])
    (ex,) = load_examples(path, log=logs.append)
    assert ex.responses == ["a", "b", "c"] and ex.scores == [1.0, 3.0, 0.0]  # the first "a" keeps its 1
    assert ex.meta["dropped_duplicates"] == [2]
    assert logs == [f"dropped duplicate responses in 1 rows of {path} (kept the first of each)"]


def test_ranking_with_duplicates_is_reranked_over_the_survivors(tmp_path):
    ex = load_one(tmp_path, {"prompt": "p", "ranking": ["a", "b", "a", "c"]}, log=lambda m: None)
    assert ex.responses == ["a", "b", "c"] and ex.scores == [2.0, 1.0, 0.0]


def test_unpaired(tmp_path):
    rows = [
        {"prompt": "p", "completion": "good", "label": True},
        {"prompt": "p", "completion": "bad", "label": False},
    ]
    good, bad = load_examples(write_jsonl(tmp_path, rows))
    assert good.responses == ["good"] and good.scores == [1.0] and good.desirable == [True]
    assert bad.scores == [0.0] and bad.desirable == [False]


def test_prompt_only(tmp_path):
    ex = load_one(tmp_path, {"prompt": "write a poem"})
    assert ex.prompt == "write a poem" and ex.responses == [] and ex.scores is None


def test_sft_prompt_completion(tmp_path):
    ex = load_one(tmp_path, {"prompt": "p", "completion": " c"})
    assert ex.prompt == "p" and ex.responses == [" c"] and ex.scores is None


def test_sft_whole_text(tmp_path):
    ex = load_one(tmp_path, {"text": "all of it"})
    assert ex.prompt == "" and ex.responses == ["all of it"] and ex.meta == {"whole_text": True}


def test_sft_messages_last_assistant_turn_is_the_response(tmp_path):
    messages = [user("a"), bot("b"), user("c"), bot("d")]
    ex = load_one(tmp_path, {"messages": messages})
    assert ex.prompt == messages[:3] and ex.responses == [[bot("d")]]
    assert ex.meta["messages"] == messages


def test_qa_feedback_synthetic_row(tmp_path):
    row = {
        "question": "Q?",
        "passages": [["T1", "s1.", "s2.\n\nmore"], ["T2", "u1."]],
        "gold": "G",
        "prediction 1": "A one.",
        "prediction 2": "A two.",
        "prediction 3": "A three.",
        "prediction 4": "A four.",
        # 1v2: 2 wins, 1v3: none, 1v4: 1 wins, 2v3: 2 wins, 2v4: 4 wins, 3v4: none
        "preference": [2, 0, 1, 1, 2, 0],
        "feedback": {"errors": [{"error type": "Irrelevant", "start": 2, "end": 5}], "missing-info": []},
    }
    ex = load_one(tmp_path, row)
    # wins: p1 = 1 (v4), p2 = 2 (v1, v3), p3 = 0, p4 = 1 (v2)
    assert ex.scores == [1.0, 2.0, 0.0, 1.0]
    assert (
        ex.prompt
        == "question: Q?\ncontext: wikipage: T1\ntext: s1. s2. more\nwikipage: T2\ntext: u1.\nanswer:"
    )
    assert ex.responses == ["A one.", "A two.", "A three.", "A four."]
    assert ex.meta["feedback"] is not None and ex.meta["gold"] == "G"


# 2. Bad rows: each reason, at the right FILE:LINE ---------------------------------------


@pytest.mark.parametrize(
    ("row", "format", "reason"),
    [
        ({"prompt": "p", "chosen": "a"}, "pairwise", "missing field 'rejected'"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "auto", "chosen and rejected are identical"),
        ({"prompt": "p", "chosen": "a", "rejected": ""}, "auto", "rejected is empty"),
        ({"prompt": "  ", "chosen": "a", "rejected": "b"}, "auto", "prompt is empty"),
        (
            {"prompt": "p", "chosen": 3, "rejected": "b"},
            "auto",
            "chosen must be a string or a list of chat messages, got int",
        ),
        (
            {"prompt": "p", "chosen": [bot("a")], "rejected": [bot("b")]},
            "auto",
            "prompt is a string but chosen is chat messages; make the prompt chat messages too",
        ),
        (
            {"prompt": [user("p")], "chosen": [{"content": "a"}], "rejected": [bot("b")]},
            "auto",
            "chosen message 1 has no 'role'",
        ),
        (
            {"prompt": [{"role": "user"}], "chosen": [bot("a")], "rejected": [bot("b")]},
            "auto",
            "prompt message 1 has no 'content'",
        ),
        (
            {"prompt": [user("p")], "chosen": [user("a")], "rejected": [bot("b")]},
            "auto",
            "chosen must start with an assistant message, got role 'user'",
        ),
        (
            {"chosen": "a", "rejected": "b"},
            "pairwise",
            "missing field 'prompt' (an implicit prompt needs chosen and rejected as chat messages; for Anthropic HH dialogue strings use format hh_rlhf)",
        ),
        (
            {"chosen": [user("x"), bot("a")], "rejected": [user("y"), bot("a")]},
            "auto",
            "chosen and rejected share no leading messages, so there is no implicit prompt",
        ),
        (
            {"chosen": [user("x"), bot("a")], "rejected": [user("x"), bot("a"), user("z"), bot("b")]},
            "auto",
            "chosen has no messages after the prompt it shares with the other",
        ),
        (
            {"chosen": [user("x"), bot("a")], "rejected": [user("x"), bot("a")]},
            "auto",
            "chosen and rejected are identical",
        ),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"},
            "auto",
            "chosen and rejected prompts differ (the dialogues differ before the last Assistant turn)",
        ),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: a\n\nAssistant: x"},
            "auto",
            "chosen and rejected are identical",
        ),
        (
            {"chosen": "\n\nHuman: a x", "rejected": "\n\nHuman: a\n\nAssistant: y"},
            "auto",
            "chosen has no '\\n\\nAssistant:' turn",
        ),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: a\n\nAssistant:"},
            "auto",
            "rejected response is empty",
        ),
        (
            {"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": 5},
            "hh_rlhf",
            "rejected must be a string, got int",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "scores": [1]},
            "ranked",
            "scores has 1 entries but responses has 2",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "scores": [1, "high"]},
            "ranked",
            "score 2 must be a finite number, got 'high'",
        ),
        (
            {"prompt": "p", "responses": ["a", "b"], "scores": [1, True]},
            "ranked",
            "score 2 must be a finite number, got True",
        ),
        ({"prompt": "p", "responses": ["a", ""], "scores": [1, 0]}, "ranked", "response 2 is empty"),
        (
            {"prompt": "p", "responses": ["a", "a"], "scores": [1, 0]},
            "ranked",
            "needs at least 2 different responses to rank, got 1 after dropping duplicates",
        ),
        ({"prompt": "p", "ranking": ["a"]}, "ranked", "needs at least 2 different responses to rank, got 1"),
        ({"prompt": "p", "responses": "ab", "scores": [1, 0]}, "ranked", "responses must be a list, got str"),
        ({"prompt": "p"}, "ranked", "missing field 'responses' (with 'scores') or 'ranking'"),
        ({"prompt": "p", "responses": ["a", "b"]}, "ranked", "missing field 'scores'"),
        (
            {"prompt": "p", "completion": "c", "label": "yes"},
            "auto",
            "label must be true or false, got 'yes'",
        ),
        ({"prompt": "p", "completion": "", "label": True}, "auto", "completion is empty"),
        ({"prompt": ""}, "auto", "prompt is empty"),
        ({"text": " "}, "auto", "text is empty"),
        (
            {"messages": [user("a"), bot("b"), user("c")]},
            "auto",
            "messages must end with an assistant message, got role 'user'",
        ),
        ({"messages": [bot("b")]}, "auto", "messages has no turn before the last assistant message"),
        (
            {"messages": [user("a"), "b"]},
            "auto",
            "messages message 2 must be an object with role and content, got str",
        ),
        ({"messages": [user("a"), bot("")]}, "auto", "the last assistant message is empty"),
        ({"prompt": "p"}, "sft", "missing field 'completion'"),
    ],
)
def test_bad_row_reasons(tmp_path, row, format, reason):
    assert bad_reason(tmp_path, row, format) == reason


def qa_row(**changes):
    row = {"question": "Q?", "passages": [["T", "s."]], "preference": [1, 1, 1, 1, 1, 1]}
    row.update({f"prediction {i}": f"answer {i}" for i in range(1, 5)})
    row.update(changes)
    return row


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (qa_row(preference=[1, 1, 1]), "preference has 3 judgments, expected 6 for 4 predictions"),
        (qa_row(preference=[1, 1, 1, 1, 1, 3]), "preference 6 must be 0, 1 or 2, got 3"),
        (qa_row(passages=[["T", 1]]), "passage 1 must be a list of strings [title, text, ...]"),
        (qa_row(**{"prediction 2": ""}), "prediction 2 is empty"),
        (
            qa_row(feedback={"errors": [{"start": 3, "end": 99}]}),
            "feedback error 1 needs 0 <= start <= end <= 8 (prediction 1)",
        ),
        (
            {"question": "Q?", "passages": [], "prediction 1": "a", "preference": []},
            "missing field 'prediction 2'",
        ),
    ],
)
def test_qa_feedback_bad_rows(tmp_path, row, reason):
    assert bad_reason(tmp_path, row, "qa_feedback") == reason


# 3. Detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "name"),
    [
        (qa_row(), "qa_feedback"),
        ({"prompt": "p", "responses": ["a"], "scores": [1]}, "ranked"),
        ({"prompt": "p", "ranking": ["a"]}, "ranked"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "pairwise"),
        ({"chosen": [user("x"), bot("a")], "rejected": [user("x"), bot("b")]}, "pairwise"),
        ({"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: x\n\nAssistant: b"}, "hh_rlhf"),
        ({"prompt": "p", "completion": "c", "label": False}, "unpaired"),
        ({"prompt": "p", "completion": "c"}, "sft"),
        ({"text": "t"}, "sft"),
        ({"messages": [user("a"), bot("b")]}, "sft"),
        ({"prompt": "p"}, "prompt"),
        (
            {"prompt": "p", "completion": "c", "label": None, "chosen": None},
            "sft",
        ),  # nulls are absent columns
        ({"input": "p", "output": "c"}, None),
    ],
)
def test_detect_format(row, name):
    assert detect_format(row) == name


def test_converters_raise_badrow_directly():
    with pytest.raises(BadRow, match="missing field 'prompt'"):
        FORMATS["prompt"]({}, "x:1")


# 5. The real data ----------------------------------------------------------------------


def test_real_hh_rlhf_reports_its_empty_answers_and_mis_split_rows(shared_data):
    path = shared_data / "hh-rlhf-harmless" / "test.jsonl.gz"
    with pytest.raises(DataError) as err:
        load_examples(path)
    lines = str(err.value).splitlines()
    # 4 chosen answers are a lone space (nothing after "Assistant:"): empty responses
    empty = [f"{path}:{n}: chosen response is empty" for n in (87, 517, 926, 1104)]
    split = "chosen and rejected prompts differ (the dialogues differ before the last Assistant turn)"
    assert lines[:5] == empty + [f"{path}:1255: {split}"]
    assert lines[5] == "... and 4 more"
    assert lines[6] == f"9 bad rows of 2312 in {path} (format hh_rlhf); set data.skip_bad_rows: true to skip them"

    logs = []
    exs = load_examples(path, skip_bad_rows=True, log=logs.append)
    assert len(exs) == 2303
    assert logs[0].startswith(f"skipped 9 bad rows of 2312 in {path}")
    assert all(ex.prompt.endswith("\n\nAssistant:") and ex.scores == [1.0, 0.0] for ex in exs)
    assert all(r.startswith(" ") and r.strip() for ex in exs for r in ex.responses)


def test_real_qa_feedback(shared_data):
    path = shared_data / "qa-feedback" / "dev_feedback.json"
    exs = load_examples(path)
    assert len(exs) == 500
    assert all(ex.num_responses == 4 for ex in exs)
    raw = json.loads(path.read_text())
    for ex, row in zip(exs, raw):
        # every judgment that prefers one answer gives exactly one win
        assert sum(ex.scores) == sum(p != 0 for p in row["preference"])
        assert ex.responses[0] == row["prediction 1"]
        assert ex.meta["feedback"]["errors"] == row["feedback"]["errors"]

    first = exs[0]
    assert first.source == f"{path}:[0]"
    # Row 0's preference is [0, 1, 2, 1, 0, 2] over 1v2, 1v3, 1v4, 2v3, 2v4, 3v4:
    #   1v2 = 0 no one, 1v3 = 1 -> p1, 1v4 = 2 -> p4, 2v3 = 1 -> p2, 2v4 = 0 no one, 3v4 = 2 -> p4
    #   wins: p1 = 1, p2 = 1, p3 = 0, p4 = 2 (p1 and p2 tie)
    assert raw[0]["preference"] == [0, 1, 2, 1, 0, 2]
    assert first.scores == [1.0, 1.0, 0.0, 2.0]
    assert first.ranked() == [3, 0, 1, 2]
    assert first.prompt.startswith(
        "question: When does bloom by troye sivan come out?\n"
        "context: wikipage: Bloom (Troye Sivan album)\n"
        "text: Bloom (Troye Sivan album) Bloom is the second studio album"
    )
    assert first.prompt.endswith("\nanswer:")
    assert first.prompt.count("\nwikipage: ") == len(raw[0]["passages"]) - 1
    span = first.meta["feedback"]["errors"][0]
    assert (span["error type"], span["start"], span["end"]) == ("Irrelevant", 283, 401)
    assert first.responses[0][283:401].startswith("The lead single")


# 6. Whitespace-only responses and per-row format checks ----------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "p", "chosen": " \n", "rejected": "b"}, "chosen is empty"),
        ({"chosen": "\n\nHuman: x\n\nAssistant: ", "rejected": "\n\nHuman: x\n\nAssistant: b"},
         "chosen response is empty"),
        ({"prompt": "p", "responses": ["a", "\t"], "scores": [1, 0]}, "response 2 is empty"),
        ({"prompt": "p", "completion": "  ", "label": True}, "completion is empty"),
        ({"prompt": "p", "completion": "  "}, "completion is empty"),
        ({"messages": [user("x"), bot("  ")]}, "the last assistant message is empty"),
        ({"prompt": [user("x")], "chosen": [bot(" ")], "rejected": [bot("b")]}, "chosen is empty"),
    ],
)
def test_whitespace_only_responses_are_empty(tmp_path, row, reason):
    path = write_jsonl(tmp_path, [row])
    with pytest.raises(DataError, match=rf"^{path}:1: {reason}"):
        load_examples(path)


def test_qa_feedback_whitespace_prediction_is_empty(tmp_path):
    row = qa_row()
    row["prediction 2"] = "   "
    path = write_jsonl(tmp_path, [row])
    with pytest.raises(DataError, match=rf"^{path}:1: prediction 2 is empty"):
        load_examples(path)


