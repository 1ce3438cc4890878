"""Fine-grained reward models: segment-end positions, the head, save and load."""

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.models.span_model import (
    SpanModelInfo,
    encode_segments,
    load_span_reward_model,
    predicted_errors,
    save_span_reward_model,
    segment_logits,
)


@pytest.fixture(scope="module")
def tiny(tiny_encoder):
    path = tiny_encoder
    info = SpanModelInfo(level="sentence", categories=["Irrelevant"], max_length=64)
    return load_span_reward_model(path, info, init_from_base=True)


def test_each_segment_is_read_at_its_last_answer_token(tiny):
    _, tok = tiny
    response = "Paris is big. It rains."
    batch, positions = encode_segments(tok, ["where?"], [response], [[13, 23]], 64)
    ids = batch["input_ids"][0].tolist()
    # [CLS] where ? [SEP] paris is big . it rains . [SEP]: the segment ends are the two periods
    assert tok.convert_ids_to_tokens(ids)[:12] == ["[CLS]", "where", "?", "[SEP]", "paris", "is", "big", ".",
                                                   "it", "rains", ".", "[SEP]"]
    assert positions == [[7, 10]]
    # an end inside a word is read at the token that starts before it: "big" (end 11 falls in it)
    assert encode_segments(tok, ["where?"], [response], [[11]], 64)[1] == [[6]]


def test_truncation_cuts_the_context_and_keeps_an_answer_that_fits_whole(tiny):
    _, tok = tiny
    context = "where " + " ".join(["word"] * 100)
    response = "one two three. four five six seven eight nine ten eleven twelve thirteen fourteen."
    # 16 answer tokens + [CLS] [SEP] [SEP] leave 1 of 20 for the context: its first word
    batch, positions = encode_segments(tok, [context], [response], [[14, len(response)]], 20)
    assert batch["input_ids"].shape[1] == 20
    assert tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())[:4] == ["[CLS]", "where", "[SEP]", "one"]
    assert positions == [[6, 18]]  # both periods: the answer was not cut


def test_an_answer_too_long_on_its_own_loses_its_end_and_those_segments(tiny):
    _, tok = tiny
    context = " ".join(["word"] * 100)
    response = "one two three. four five six seven eight nine ten eleven twelve thirteen fourteen fifteen."
    batch, positions = encode_segments(tok, [context, "q"], [response, "a b."], [[14, len(response)], [4]], 20)
    assert batch["input_ids"].shape == (2, 20)
    assert positions[0][0] is not None and positions[0][1] is None  # the second sentence lost its end
    assert positions[1] == [5] and batch["attention_mask"][1].sum() == 7  # [CLS] q [SEP] a b . [SEP], padded


def test_logits_have_one_row_per_surviving_segment_and_carry_gradients(tiny):
    model, tok = tiny
    logits, index = segment_logits(model, tok, ["q", "q"], ["a b. c d.", "e f."], [[4, 9], [4]])
    assert logits.shape == (3, 2) and index == [(0, 0), (0, 1), (1, 0)]
    logits.sum().backward()
    assert model.model.classifier.weight.grad is not None


def test_save_load_roundtrip_keeps_predictions_and_info(tiny, tmp_path):
    model, tok = tiny
    model.info.error_reward = -0.5
    out = save_span_reward_model(model, tok, tmp_path / "rm")
    loaded, _ = load_span_reward_model(out)
    assert loaded.info == model.info
    with torch.no_grad():
        a, _ = segment_logits(model.eval(), tok, ["q"], ["a b. c d."], [[4, 9]])
        b, _ = segment_logits(loaded, tok, ["q"], ["a b. c d."], [[4, 9]])
    torch.testing.assert_close(a, b)


def test_a_base_checkpoint_is_refused_as_a_trained_model(tiny_encoder):
    with pytest.raises(AlignkitError, match="not a trained fine-grained reward model"):
        load_span_reward_model(tiny_encoder)


def test_predicted_errors_compare_p_error_with_the_threshold():
    """Logits (0, 0): p(error) 0.5, not above 0.5 (a tie is "no error", as the argmax); (0, ln 3): p 0.75;
    (ln 3, 0): p 0.25, above a threshold of 0.2."""
    import math

    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)], [math.log(3), 0.0]])
    assert predicted_errors(logits, 0.5).tolist() == [False, True, False]
    assert predicted_errors(logits, 0.2).tolist() == [True, True, True]
    assert predicted_errors(logits, 0.8).tolist() == [False, False, False]


def test_context_lines_keep_the_prompts_first_lines_only(tiny):
    from alignkit.models.span_model import model_context

    prompt = "question: where?\ncontext: wikipage: Paris\ntext: Paris is big.\nanswer:"
    assert model_context(prompt, 1) == "question: where?"
    assert model_context(prompt, 2) == "question: where?\ncontext: wikipage: Paris"
    assert model_context(prompt, 0) == prompt
    model, tok = tiny
    model.info.context_lines = 1
    try:
        with torch.no_grad():
            first_line, _ = segment_logits(model.eval(), tok, [prompt], ["a b. c d."], [[4, 9]])
            model.info.context_lines = 0
            question_only, _ = segment_logits(model, tok, ["question: where?"], ["a b. c d."], [[4, 9]])
        torch.testing.assert_close(first_line, question_only)  # the passages never reach the model
    finally:
        model.info.context_lines = 0
