"""Example -> TokenizedExample: the prompt/response boundary, EOS policy and truncation."""

import logging
import os

import pytest
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from alignkit.data import tokenize as tokmod
from alignkit.data.schema import Example
from alignkit.data.tokenize import TokenizeConfig, tokenize_example, tokenize_examples
from alignkit.errors import AlignkitError, ConfigError, DataError
from alignkit.models.tiny import EOS, IM_END, PAD, build_tiny_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HH_PROMPT = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:"
CHAT_PROMPT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "how are you?"},
]

# End-of-turn IS the eos token, and the template writes a newline after it.
EOS_TURN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The last assistant turn renders differently from the generation prompt: no prefix property.
NON_PREFIX_TEMPLATE = (
    "{% for m in messages %}{% if loop.last and m['role'] == 'assistant' %}{{ 'FINAL ' + m['content'] }}"
    "{% else %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
# No special end-of-turn marker at all: trailing whitespace is response text, kept.
NO_MARKER_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] + ':' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _with_template(template):
    tok = build_tiny_tokenizer()
    tok.chat_template = template
    return tok


def _no_bos_tokenizer(tok):
    """The tiny vocabulary without BOS (GPT-2-like: nothing added, no chat template)."""
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD)


def _enc(tok, text):
    return tok(text, add_special_tokens=False).input_ids


# ---- plain text --------------------------------------------------------------------------


def test_hh_multi_turn_string_prompt(tok):
    out = tokenize_example(Example(HH_PROMPT, [" fine"], source="hh.jsonl:7"), tok)
    eos = tok.eos_token_id
    assert out.prompt_ids == tok(HH_PROMPT).input_ids
    assert out.prompt_ids[0] == tok.bos_token_id and eos not in out.prompt_ids
    assert out.response_ids == [_enc(tok, " fine") + [eos]]
    text = tok.decode(out.prompt_ids, skip_special_tokens=True) + tok.decode(out.response_ids[0])
    assert text == HH_PROMPT + " fine" + EOS
    assert out.source == "hh.jsonl:7"


def test_response_already_ending_with_eos_text_is_not_duplicated(tok):
    out = tokenize_example(Example("Q:", [" yes" + EOS, " no"]), tok)
    assert out.response_ids[0] == _enc(tok, " yes") + [tok.eos_token_id]
    assert out.response_ids[0].count(tok.eos_token_id) == 1
    assert out.response_ids[1][-1] == tok.eos_token_id


def test_add_eos_false(tok):
    out = tokenize_example(Example("Q:", [" yes"]), tok, TokenizeConfig(add_eos=False))
    assert out.response_ids == [_enc(tok, " yes")]


def test_empty_prompt_becomes_bos(tok):
    out = tokenize_example(Example("", ["hello"]), tok)
    assert out.prompt_ids == [tok.bos_token_id]
    with pytest.raises(DataError, match="f:2: the prompt is empty"):
        tokenize_example(Example("", ["hello"], source="f:2"), _no_bos_tokenizer(tok))


# ---- chat ------------------------------------------------------------------------------------


def test_chat_multi_turn_one_eos_and_generation_prompt(tok):
    responses = [[{"role": "assistant", "content": "fine, thanks"}], "not great"]
    out = tokenize_example(Example(CHAT_PROMPT, responses, scores=[1.0, 0.0]), tok)
    eos, im_end = tok.eos_token_id, tok.convert_tokens_to_ids(IM_END)
    gen_prompt = _enc(tok, "<|im_start|>assistant\n")
    assert out.prompt_ids == tok.apply_chat_template(
        CHAT_PROMPT, add_generation_prompt=True, return_dict=False
    )
    assert out.prompt_ids[-len(gen_prompt) :] == gen_prompt
    assert out.prompt_ids[0] == tok.bos_token_id
    for content, ids in zip(["fine, thanks", "not great"], out.response_ids):
        # the end-of-turn marker is kept, the template's trailing newline is dropped, one EOS ends it
        assert ids == _enc(tok, content) + [im_end, eos]
        assert ids.count(eos) == 1
    full = CHAT_PROMPT + [{"role": "assistant", "content": "not great"}]
    rendered = tok.apply_chat_template(full, tokenize=False)
    assert tok.decode(out.prompt_ids + out.response_ids[1]) == rendered.removesuffix("\n") + EOS
    assert out.scores == [1.0, 0.0]


def test_chat_string_prompt_with_chat_responses(tok):
    out = tokenize_example(Example("hi", [[{"role": "assistant", "content": "yo"}]]), tok)
    assert tok.decode(out.prompt_ids) == "<|bos|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_multi_message_response_ends_once(tok):
    response = [
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    out = tokenize_example(Example(CHAT_PROMPT, [response]), tok)
    ids = out.response_ids[0]
    assert ids.count(tok.eos_token_id) == 1 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids).startswith("a<|im_end|>\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\nc")


def test_chat_template_ending_turn_with_eos_gets_no_second_eos():
    tok = _with_template(EOS_TURN_TEMPLATE)
    out = tokenize_example(Example(CHAT_PROMPT, ["fine", [{"role": "assistant", "content": "ok"}]]), tok)
    eos = tok.eos_token_id
    for content, ids in zip(["fine", "ok"], out.response_ids):
        assert ids == _enc(tok, content) + [eos]  # the template's EOS, its newline dropped, none added
    assert out.prompt_ids.count(eos) == len(CHAT_PROMPT)  # earlier turns end with EOS, kept in the prompt


def test_chat_template_without_special_marker_keeps_trailing_text():
    tok = _with_template(NO_MARKER_TEMPLATE)
    out = tokenize_example(Example([{"role": "user", "content": "hi"}], ["yo"]), tok)
    assert tok.decode(out.prompt_ids) == "user:hi\nassistant:"
    assert tok.decode(out.response_ids[0]) == "yo\n" + EOS


def test_chat_template_without_prefix_property_is_an_error_not_a_bad_row():
    tok = _with_template(NON_PREFIX_TEMPLATE)
    with pytest.raises(AlignkitError, match="bad.jsonl:3.*prefix") as info:
        tokenize_examples([Example(CHAT_PROMPT, ["x"], source="bad.jsonl:3")], tok, skip_bad_rows=True)
    assert not isinstance(info.value, DataError)


def test_chat_row_without_template_is_an_error(tok):
    with pytest.raises(AlignkitError, match="no chat_template"):
        tokenize_example(Example(CHAT_PROMPT, ["x"]), _no_bos_tokenizer(tok))


def test_chat_template_failure_names_the_row(tok):
    bad = [{"role": "wizard", "content": "abracadabra"}]
    with pytest.raises(DataError, match="f:9: the chat template failed.*unknown role"):
        tokenize_example(Example(bad, ["x"], source="f:9"), tok)


# ---- truncation -----------------------------------------------------------------------------


def test_prompt_keeps_its_end_and_bos(tok):
    prompt = " ".join(f"word{i}" for i in range(40))
    full = tok(prompt).input_ids
    out = tokenize_example(Example(prompt, [" ok"]), tok, TokenizeConfig(max_prompt_length=10, max_length=64))
    assert out.prompt_ids == [tok.bos_token_id] + full[-9:]
    assert tok.decode(out.prompt_ids).endswith("word39")


def test_chat_prompt_truncation_keeps_generation_prompt(tok):
    long_chat = [{"role": "user", "content": "blah " * 50}]
    cfg = TokenizeConfig(max_prompt_length=8, max_length=32)
    out = tokenize_example(Example(long_chat, ["ok"]), tok, cfg)
    assert len(out.prompt_ids) == 8
    assert tok.decode(out.prompt_ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_cut_response_loses_eos(tok):
    prompt_len = len(tok("Q:").input_ids)
    long = " the movie was great and the acting was wonderful"
    n = len(_enc(tok, long))
    eos = tok.eos_token_id
    fits = TokenizeConfig(max_length=prompt_len + n + 1)
    assert tokenize_example(Example("Q:", [long]), tok, fits).response_ids[0] == _enc(tok, long) + [eos]
    # one token short: the text fits but its EOS does not, so the response did not end
    short_by_one = TokenizeConfig(max_length=prompt_len + n)
    assert tokenize_example(Example("Q:", [long]), tok, short_by_one).response_ids[0] == _enc(tok, long)
    cut = TokenizeConfig(max_length=prompt_len + 3)
    out = tokenize_example(Example("Q:", [long, " ok"]), tok, cut)
    assert out.response_ids == [_enc(tok, long)[:3], _enc(tok, " ok") + [eos]]


def test_max_prompt_length_defaults_to_half_and_must_leave_room():
    assert TokenizeConfig(max_length=192).max_prompt_length == 96  # TRL's 512 would exceed a max_length of 192
    with pytest.raises(ConfigError, match=r"data.max_prompt_length \(100\) must be below data.max_length \(5\)"):
        TokenizeConfig(max_prompt_length=100, max_length=5)
    with pytest.raises(ConfigError):
        TokenizeConfig(max_prompt_length=-1)


def test_a_long_prompt_is_truncated_by_rule_and_reported_once(tok, caplog):
    """A 40-word prompt with max_prompt_length 10: keep_end keeps BOS + its last 9 tokens, keep_start its
    first 10; the response gets the room left, max_length - 10 = 22 tokens."""
    prompt = " ".join(f"word{i}" for i in range(40))
    full = tok(prompt).input_ids
    rows = [Example(prompt, [" ok"], source=f"f:{i}") for i in range(3)] + [Example("Q:", [" ok"])]
    with caplog.at_level("INFO", logger="alignkit.data.tokenize"):
        end = tokenize_examples(rows, tok, TokenizeConfig(max_prompt_length=10, max_length=32))
    assert [ex.prompt_ids for ex in end[:3]] == [[tok.bos_token_id] + full[-9:]] * 3
    assert [r.message for r in caplog.records] == [
        "truncated 3 of 4 prompts to max_prompt_length 10 tokens (kept their end; data.truncation chooses)"
    ]
    start = tokenize_examples(rows, tok, TokenizeConfig(max_prompt_length=10, max_length=32, truncation="keep_start"))
    assert start[0].prompt_ids == full[:10] and len(start) == 4
    dropped = tokenize_examples(rows, tok, TokenizeConfig(max_prompt_length=10, max_length=32, drop_long_prompts=True))
    assert len(dropped) == 1 and dropped[0].prompt_ids == tok("Q:").input_ids


def test_a_response_cut_under_half_its_length_is_warned_about(tok, caplog):
    long = " the movie was great and the acting was wonderful"
    n = len(_enc(tok, long)) + 1  # with its EOS
    prompt_len = len(tok("Q:").input_ids)
    cfg = TokenizeConfig(max_prompt_length=prompt_len, max_length=prompt_len + n // 2 - 1)
    with caplog.at_level("INFO", logger="alignkit.data.tokenize"):
        out = tokenize_examples([Example("Q:", [long, " ok"], source="f:7")], tok, cfg)
    assert len(out[0].response_ids[0]) == n // 2 - 1
    warning = next(r.message for r in caplog.records if r.levelname == "WARNING")
    assert warning.startswith(f"1 responses kept under 50% of their tokens within max_length {cfg.max_length} "
                              f"(first: f:7 response 0: {n // 2 - 1} of {n} tokens)")


# ---- whole text, K, bad rows -------------------------------------------------------------------


def test_whole_text_row(tok):
    text = "This movie was great."
    out = tokenize_example(Example("", [text], meta={"whole_text": True}), tok)
    assert out.prompt_ids == [tok.bos_token_id]
    assert out.response_ids == [_enc(tok, text) + [tok.eos_token_id]]


def test_whole_text_row_without_bos(tok):
    nobos = _no_bos_tokenizer(tok)
    text = "This movie was great."
    ids = _enc(nobos, text)
    out = tokenize_example(Example("", [text], meta={"whole_text": True}), nobos)
    assert out.prompt_ids == ids[:1]
    assert out.response_ids == [ids[1:] + [nobos.eos_token_id]]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_k_varies_and_fields_carry(tok, k):
    responses = [f" answer {i}" for i in range(k)]
    scores = [float(k - i) for i in range(k)] if k else None
    desirable = [i == 0 for i in range(k)] if k else None
    example = Example(HH_PROMPT, responses, scores=scores, desirable=desirable, source=f"f:{k}")
    out = tokenize_example(example, tok)
    assert len(out.response_ids) == k
    assert (out.scores, out.desirable, out.source) == (scores, desirable, f"f:{k}")
    assert out.prompt_ids == tok(HH_PROMPT).input_ids


def test_chat_prompt_only(tok):
    out = tokenize_example(Example(CHAT_PROMPT, []), tok)
    assert out.response_ids == [] and tok.decode(out.prompt_ids).endswith("assistant\n")


@pytest.mark.parametrize(
    "responses", [[" ok", ""], [" ok", EOS], [" ok", [{"role": "assistant", "content": ""}]]]
)
def test_empty_response_is_a_bad_row(tok, responses):
    with pytest.raises(DataError, match="e:1: response 1 is empty"):
        tokenize_example(Example("Q:", responses, source="e:1"), tok)


def test_tokenize_examples_matches_one_by_one_and_skips(tok, monkeypatch, caplog):
    monkeypatch.setattr(tokmod, "_CHUNK", 2)  # exercise chunk boundaries
    examples = [
        Example(HH_PROMPT, [" fine", " bad"], scores=[1.0, 0.0], source="a:1"),
        Example(CHAT_PROMPT, ["ok"], source="a:2"),
        Example("Q:", [""], source="a:3"),  # bad: empty response
        Example("", ["whole text"], meta={"whole_text": True}, source="a:4"),
        Example("prompt only", [], source="a:5"),
        Example("Q:", [" yes", " no", " maybe"], scores=[2.0, 1.0, 0.0], source="a:6"),
    ]
    with pytest.raises(DataError, match="a:3"):
        tokenize_examples(examples, tok)
    with caplog.at_level(logging.WARNING, logger="alignkit.data.tokenize"):
        out = tokenize_examples(iter(examples), tok, skip_bad_rows=True)
    assert [o.source for o in out] == ["a:1", "a:2", "a:4", "a:5", "a:6"]
    assert out == [tokenize_example(e, tok) for e in examples if e.source != "a:3"]
    assert "skipped 1 bad rows" in caplog.text and "a:3" in caplog.text


def test_bad_row_without_source_is_named_by_index(tok):
    with pytest.raises(DataError, match="example 1: response 0 is empty"):
        tokenize_examples([Example("Q:", [" a"]), Example("Q:", [""])], tok)


# ---- string rows as chat (data.chat_strings) -------------------------------------------


def test_dialogue_messages_splits_hh_turns_and_drops_the_open_assistant_turn():
    prompt = "\n\nHuman: hi\n\nAssistant: hello there\n\nHuman: why?\n\nAssistant:"
    assert tokmod.dialogue_messages(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "why?"},
    ]
    assert tokmod.dialogue_messages("  What is 2+2? ") == [{"role": "user", "content": "What is 2+2?"}]


def test_chat_strings_renders_hh_row_with_the_template_and_one_end_of_turn(tok):
    hh = Example("\n\nHuman: hi\n\nAssistant: yo\n\nHuman: why?\n\nAssistant:", [" because", " no"])
    out = tokenize_example(hh, tok, TokenizeConfig(chat_strings=True))
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "why?"}]
    assert out.prompt_ids == tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    eos, im_end = tok.eos_token_id, tok.convert_tokens_to_ids(IM_END)
    assert out.response_ids == [_enc(tok, "because") + [im_end, eos], _enc(tok, "no") + [im_end, eos]]
    # the same row as prompt/chosen/rejected strings, batch-encoded, gives the same ids
    batched = tokenize_examples([hh], tok, TokenizeConfig(chat_strings=True))[0]
    assert (batched.prompt_ids, batched.response_ids) == (out.prompt_ids, out.response_ids)
    # rewards read the row as written (as alignkit eval scores it), not its chat form, on both paths
    assert out.prompt_text == batched.prompt_text == hh.prompt


def test_chat_strings_leaves_whole_text_rows_and_needs_a_template(tok):
    whole = Example("", ["all of it"], meta={"whole_text": True})
    assert tokenize_example(whole, tok, TokenizeConfig(chat_strings=True)) == tokenize_example(whole, tok)
    with pytest.raises(AlignkitError, match="chat_strings is on but the tokenizer has no chat_template"):
        tokenize_example(Example("Q", ["A"]), _no_bos_tokenizer(tok), TokenizeConfig(chat_strings=True))
