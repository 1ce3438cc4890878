"""Segmentation and labelling of span feedback (Fine-Grained RLHF's sentences and sub-sentences)."""

import json

import pytest

from alignkit.data.examples import load_examples
from alignkit.data.formats import detect_format
from alignkit.data.loaders import BadRow
from alignkit.data.schema import Example
from alignkit.data.spans import (
    FACTUALITY,
    RELEVANCE,
    label_segments,
    segment,
    sentences,
    span_examples,
    split_by_prompt,
    sub_sentences,
)


def texts(text, segs):
    return [text[a:b] for a, b in segs]


def test_sentences_split_after_end_punctuation_and_newlines_but_not_initials_or_abbreviations():
    text = "J. R. R. Tolkien wrote it. Dr. Smith agreed! Did he?\nYes  "
    assert texts(text, sentences(text)) == ["J. R. R. Tolkien wrote it.", "Dr. Smith agreed!", "Did he?", "Yes"]
    # (0, 26): the first sentence ends just past its period; the trailing spaces of "Yes  " are not in it
    assert sentences(text)[0] == (0, 26) and sentences(text)[-1] == (len(text) - 5, len(text) - 2)


def test_closing_quotes_stay_with_their_sentence_and_a_decimal_point_does_not_split():
    text = 'He said "go." It cost 2.5 dollars.'
    assert texts(text, sentences(text)) == ['He said "go."', "It cost 2.5 dollars."]


def test_sub_sentences_cut_after_clause_punctuation_keeping_five_words():
    # words: 0 a, | 1..5 b c d e f, | 6..11: the cut after "a," would leave a 1-word first piece, so the
    # first piece runs on to the next cut; the cut after "f," leaves 6 words, more than 5 after it.
    text = "One, two three four five six, seven eight nine ten eleven twelve."
    assert texts(text, sub_sentences(text)) == ["One, two three four five six,", "seven eight nine ten eleven twelve."]


def test_a_short_middle_piece_joins_the_sub_sentence_before_it():
    # pieces: [w1..w5,] [x1 x2,] [y1..y6.]: "x1 x2," has 2 < 5 words and a piece before it, so it joins
    # the first piece; the cut after "x2," is kept (6 words follow).
    text = "a b c d e, x y, p q r s t u."
    assert texts(text, sub_sentences(text)) == ["a b c d e, x y,", "p q r s t u."]


def test_no_cut_leaves_fewer_than_five_words_after_it():
    text = "a b c d e, f g h i."  # 4 words after the comma: no cut
    assert texts(text, sub_sentences(text)) == [text]
    assert segment(text, "sentence") == sentences(text)
    with pytest.raises(ValueError, match="unknown segment level"):
        segment(text, "paragraph")


def test_sub_sentences_never_cross_sentences():
    text = "Short one. Another, much longer, sentence with many words in it, right here now."
    cuts = texts(text, sub_sentences(text))
    assert cuts[0] == "Short one."
    assert "".join(cuts).replace(" ", "") == text.replace(" ", "")


def test_labels_from_overlapping_spans_of_the_model_categories():
    text = "aaa bbb. ccc ddd. eee fff."
    segs = sentences(text)  # (0, 8) (9, 17) (18, 26)
    errors = [
        {"start": 12, "end": 16, "error type": "Irrelevant"},  # "ddd." inside sentence 2
        {"start": 18, "end": 21, "error type": "Unverifiable"},  # "eee" in sentence 3
    ]
    assert label_segments(text, segs, errors, RELEVANCE) == [0, 1, 0]
    assert label_segments(text, segs, errors, FACTUALITY) == [0, 0, 1]
    # factuality leaves out a sentence whose only error is of another category (annotation restriction)
    assert label_segments(text, segs, errors, FACTUALITY, ignore_other_errors=True) == [0, None, 1]
    # a span ending exactly where a segment starts does not overlap it
    assert label_segments(text, segs, [{"start": 0, "end": 9, "error type": "Redundant"}], RELEVANCE) == [1, 0, 0]


def test_short_spans_are_dropped_by_min_span_words():
    text = "one two three four five six. seven."
    segs = sentences(text)
    short = [{"start": 0, "end": 7, "error type": "Irrelevant"}]  # "one two": 2 words
    assert label_segments(text, segs, short, RELEVANCE, min_span_words=5) == [0, 0]
    assert label_segments(text, segs, short, RELEVANCE, min_span_words=2) == [1, 0]


def test_span_examples_use_the_first_response_and_skip_rows_without_feedback():
    text = "aaa bbb. ccc ddd."
    with_feedback = Example("q?", [text, "other"], meta={"feedback": {"errors": [
        {"start": 9, "end": 17, "error type": "Irrelevant"}]}})
    out = span_examples([with_feedback, Example("p", ["x"])], "sentence", RELEVANCE)
    assert len(out) == 1
    assert (out[0].prompt, out[0].response, out[0].segments, out[0].labels) == ("q?", text, [(0, 8), (9, 17)], [0, 1])


def test_span_feedback_format_reads_like_qa_feedback(tmp_path):
    rows = [
        {"prompt": "Q1", "response": "Good. Bad, off topic here.", "spans": [{"start": 6, "end": 26, "category": "Irrelevant"}]},
        {"prompt": "Q1", "response": "All fine.", "spans": []},
    ]
    path = tmp_path / "spans.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(rows[0]) == "span_feedback"
    examples = load_examples(path)
    assert examples[0].meta["feedback"]["errors"] == [{"start": 6, "end": 26, "error type": "Irrelevant"}]
    spans = span_examples(examples, "sentence", RELEVANCE)
    assert [s.labels for s in spans] == [[0, 1], [0]]


@pytest.mark.parametrize("span, reason", [
    ({"start": 3, "end": 2, "category": "Irrelevant"}, "0 <= start < end <= 4"),
    ({"start": 0, "end": 9, "category": "Irrelevant"}, "0 <= start < end <= 4"),
    ({"start": 0, "end": 2}, "non-empty category"),
])
def test_bad_spans_name_the_span(span, reason):
    from alignkit.data.formats import span_feedback

    with pytest.raises(BadRow, match=reason):
        span_feedback({"prompt": "p", "response": "abcd", "spans": [span]}, "f:1")


def test_split_by_prompt_keeps_every_question_on_one_side():
    examples = [Example(f"q{i % 5}", [f"r{i}"]) for i in range(20)]
    train, held = split_by_prompt(examples, 2, seed=0)
    assert len({ex.prompt for ex in held}) == 2 and len(train) + len(held) == 20
    assert not {ex.prompt for ex in train} & {ex.prompt for ex in held}


def test_real_qa_feedback_segments(shared_data):
    examples = load_examples(shared_data / "qa-feedback" / "dev_feedback.json", format="qa_feedback")
    relevance = span_examples(examples, "sub_sentence", RELEVANCE, min_span_words=5)
    factuality = span_examples(examples, "sentence", FACTUALITY, ignore_other_errors=True)
    rel_labels = [y for s in relevance for y in s.labels]
    fact_labels = [y for s in factuality for y in s.labels if y is not None]
    # measured on the file: 2,708 sub-sentences, about half with a relevance error; 766 sentences
    # judged for factuality (855 left out for their relevance errors), 279 with a factual error
    assert len(rel_labels) == 2708 and sum(rel_labels) == 1363
    assert len(fact_labels) == 766 and sum(fact_labels) == 279
    for s in relevance:  # segments are ordered, disjoint, non-empty and stripped
        assert all(a < b <= c for (a, b), (c, _) in zip(s.segments, s.segments[1:]))
        assert all(s.response[a:b] == s.response[a:b].strip() for a, b in s.segments)
