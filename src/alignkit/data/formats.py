"""Every input format becomes a list of :class:`~alignkit.data.schema.Example`.

:data:`FORMATS` maps a format name to a row converter ``fn(row, location) ->
Example`` that raises :class:`BadRow` with a reason for a row it cannot use.
:func:`detect_format` tells a row's format from its columns;
:func:`~alignkit.data.examples.load_examples` reads a file with one of them.

Formats (a "text" is a string or a list of ``{"role", "content"}`` chat messages):

- ``pairwise``: ``{prompt, chosen, rejected}`` -> K=2, scores ``[1, 0]``. TRL's
  implicit-prompt chat form ``{chosen, rejected}`` (two whole conversations) takes
  the shared leading messages as the prompt. Optional ``annotator`` (who labelled the
  pair) and ``group`` (the annotator's true group, for evaluation) columns go to
  ``meta`` (MaxMin-RLHF's mixture of reward models reads them).
- ``hh_rlhf``: Anthropic HH ``{chosen, rejected}`` dialogue strings, split at the
  last ``"\\n\\nAssistant:"``. The prompt keeps that marker; the response keeps
  its leading space (TRL's convention), so ``prompt + response`` is the original
  string. Chosen and rejected must share the prompt, else the row is bad.
- ``ranked``: ``{prompt, responses, scores}`` (higher is better, ties allowed) or
  ``{prompt, ranking: [best, ..., worst]}`` -> scores ``[K-1, ..., 0]``.
- ``qa_feedback``: the Fine-Grained RLHF qa-feedback rows (see :func:`qa_feedback`).
- ``span_feedback``: ``{prompt, response, spans: [{start, end, category}]}``, error spans over
  the response (``docs/fine_grained.md``) -> K=1, the spans in ``meta["feedback"]["errors"]``
  as qa-feedback has them (see :func:`span_feedback`).
- ``unpaired``: ``{prompt, completion, label}`` -> K=1, ``desirable=[label]``.
- ``prompt``: ``{prompt}`` -> K=0.
- ``sft``: ``{prompt, completion}``, ``{text}`` (whole text, empty prompt) or
  ``{messages}`` (the last message, an assistant turn, is the response).

Validation rules shared by all formats: a prompt must be non-blank; a response
must be non-blank (whitespace alone is an empty response: nothing to learn from,
and an empty chosen answer would teach silence); chat messages need string ``role`` and
``content``; a chat response starts with an assistant message; under a chat
prompt a response string becomes one assistant message (TRL allows both), while
a string prompt with chat responses is a bad row.
Duplicate responses: for pairwise data ``chosen == rejected`` makes the row bad;
for ranked and qa-feedback rows later duplicates are dropped (the first keeps its
score), their original indices go to ``meta["dropped_duplicates"]``, and a row
left with fewer than 2 responses is bad.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations
from numbers import Real
from typing import Any

from alignkit.data.loaders import BadRow, Row
from alignkit.data.schema import Example, Text

__all__ = ["FORMATS", "BadRow", "detect_format"]

RowConverter = Callable[[Row, str], Example]
FORMATS: dict[str, RowConverter] = {}

HH_ASSISTANT = "\n\nAssistant:"
MAX_REPORTED = 5  # bad rows listed in an error message


def register_format(name: str) -> Callable[[RowConverter], RowConverter]:
    def wrap(fn: RowConverter) -> RowConverter:
        if name in FORMATS:
            raise ValueError(f"format {name!r} registered twice")
        FORMATS[name] = fn
        return fn

    return wrap


# 1. Field checks: each returns the value or raises BadRow naming the field ------------


def _field(row: Row, name: str) -> Any:
    value = row.get(name)
    if value is None:  # absent, or null in a parquet/datasets column
        raise BadRow(f"missing field {name!r}")
    return value


def _string(row: Row, name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise BadRow(f"{name} must be a string, got {type(value).__name__}")
    return value


def _list(row: Row, name: str) -> list:
    value = _field(row, name)
    if not isinstance(value, list):
        raise BadRow(f"{name} must be a list, got {type(value).__name__}")
    return value


def _chat(value: list, what: str) -> list[dict[str, str]]:
    if not value:
        raise BadRow(f"{what} is empty")
    for j, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            raise BadRow(
                f"{what} message {j} must be an object with role and content, got {type(m).__name__}"
            )
        for key in ("role", "content"):
            if key not in m or m[key] is None:
                raise BadRow(f"{what} message {j} has no {key!r}")
            if not isinstance(m[key], str):
                raise BadRow(f"{what} message {j}: {key} must be a string, got {type(m[key]).__name__}")
    return value


def _prompt_text(value: Any, what: str = "prompt") -> Text:
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{what} is empty")
        return value
    if isinstance(value, list):
        return _chat(value, what)
    raise BadRow(f"{what} must be a string or a list of chat messages, got {type(value).__name__}")


def _response_text(value: Any, what: str) -> Text:
    if value is None:
        raise BadRow(f"{what} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{what} is empty")
        return value
    if isinstance(value, list):
        messages = _chat(value, what)
        if messages[0]["role"] != "assistant":
            raise BadRow(f"{what} must start with an assistant message, got role {messages[0]['role']!r}")
        if all(not m["content"].strip() for m in messages):
            raise BadRow(f"{what} is empty")
        return messages
    raise BadRow(f"{what} must be a string or a list of chat messages, got {type(value).__name__}")


def _same_form(prompt: Text, responses: list[Text], names: list[str]) -> list[Text]:
    """Responses in the prompt's form: under a chat prompt a string becomes one assistant message."""
    out = []
    for r, name in zip(responses, names):
        if isinstance(prompt, list) and isinstance(r, str):
            r = [{"role": "assistant", "content": r}]
        elif isinstance(prompt, str) and isinstance(r, list):
            raise BadRow(f"prompt is a string but {name} is chat messages; make the prompt chat messages too")
        out.append(r)
    return out


def _score(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise BadRow(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _dedupe(responses: list[Text], scores: list[float]) -> tuple[list[Text], list[float], list[int]]:
    """Drop later duplicates of a response; returns kept responses, their scores, dropped indices."""
    kept, kept_scores, dropped = [], [], []
    for i, (r, s) in enumerate(zip(responses, scores)):
        if r in kept:
            dropped.append(i)
        else:
            kept.append(r)
            kept_scores.append(s)
    return kept, kept_scores, dropped


def _listwise(prompt: Text, responses: list[Text], scores: list[float], location: str, meta: dict) -> Example:
    responses, scores, dropped = _dedupe(responses, scores)
    if len(responses) < 2:
        after = " after dropping duplicates" if dropped else ""
        raise BadRow(f"needs at least 2 different responses to rank, got {len(responses)}{after}")
    if dropped:
        meta["dropped_duplicates"] = dropped
    return Example(prompt, responses, scores=scores, source=location, meta=meta)


# 2. Converters, one per format ---------------------------------------------------------


@register_format("pairwise")
def pairwise(row: Row, location: str) -> Example:
    if row.get("prompt") is None:
        prompt, chosen, rejected = _implicit_prompt(row)
    else:
        prompt = _prompt_text(row["prompt"])
        chosen = _response_text(_field(row, "chosen"), "chosen")
        rejected = _response_text(_field(row, "rejected"), "rejected")
    chosen, rejected = _same_form(prompt, [chosen, rejected], ["chosen", "rejected"])
    if chosen == rejected:
        raise BadRow("chosen and rejected are identical")
    meta = {key: row[key] for key in ANNOTATION_COLUMNS if row.get(key) is not None}
    return Example(prompt, [chosen, rejected], scores=[1.0, 0.0], source=location, meta=meta)


ANNOTATION_COLUMNS = ("annotator", "group")  # pairwise columns kept in meta: who labelled a pair, and its group


def _implicit_prompt(row: Row) -> tuple[Text, Text, Text]:
    """TRL's implicit prompt: the messages ``chosen`` and ``rejected`` share at the start."""
    chosen, rejected = _field(row, "chosen"), _field(row, "rejected")
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise BadRow(
            "missing field 'prompt' (an implicit prompt needs chosen and rejected as chat messages; "
            "for Anthropic HH dialogue strings use format hh_rlhf)"
        )
    chosen, rejected = _chat(chosen, "chosen"), _chat(rejected, "rejected")
    if chosen == rejected:
        raise BadRow("chosen and rejected are identical")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise BadRow("chosen and rejected share no leading messages, so there is no implicit prompt")
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if n == len(conv):
            raise BadRow(f"{name} has no messages after the prompt it shares with the other")
    return chosen[:n], _response_text(chosen[n:], "chosen"), _response_text(rejected[n:], "rejected")


@register_format("hh_rlhf")
def hh_rlhf(row: Row, location: str) -> Example:
    chosen_prompt, chosen = _split_hh(_string(row, "chosen"), "chosen")
    rejected_prompt, rejected = _split_hh(_string(row, "rejected"), "rejected")
    if chosen_prompt != rejected_prompt:
        raise BadRow(
            "chosen and rejected prompts differ (the dialogues differ before the last Assistant turn)"
        )
    if chosen == rejected:
        raise BadRow("chosen and rejected are identical")
    return Example(chosen_prompt, [chosen, rejected], scores=[1.0, 0.0], source=location)


def _split_hh(dialogue: str, name: str) -> tuple[str, str]:
    """``"...\\n\\nAssistant: reply"`` -> (``"...\\n\\nAssistant:"``, ``" reply"``)."""
    cut = dialogue.rfind(HH_ASSISTANT)
    if cut < 0:
        raise BadRow(f"{name} has no '\\n\\nAssistant:' turn")
    cut += len(HH_ASSISTANT)
    prompt, response = dialogue[:cut], dialogue[cut:]
    if not response.strip():
        raise BadRow(f"{name} response is empty")
    return prompt, response


@register_format("ranked")
def ranked(row: Row, location: str) -> Example:
    prompt = _prompt_text(_field(row, "prompt"))
    if row.get("responses") is None and row.get("ranking") is None:
        raise BadRow("missing field 'responses' (with 'scores') or 'ranking'")
    by_ranking = row.get("responses") is None
    if by_ranking:
        responses = _list(row, "ranking")
        scores = [0.0] * len(responses)  # set below, after duplicates are dropped
    else:
        responses = _list(row, "responses")
        raw_scores = _list(row, "scores")
        if len(raw_scores) != len(responses):
            raise BadRow(f"scores has {len(raw_scores)} entries but responses has {len(responses)}")
        scores = [_score(s, f"score {i}") for i, s in enumerate(raw_scores, start=1)]
    names = [f"response {i}" for i in range(1, len(responses) + 1)]
    responses = [_response_text(r, name) for r, name in zip(responses, names)]
    responses = _same_form(prompt, responses, names)
    example = _listwise(prompt, responses, scores, location, {})
    if by_ranking:  # [best, ..., worst] -> K-1, ..., 0 over the responses kept
        k = len(example.responses)
        example.scores = [float(k - 1 - i) for i in range(k)]
    return example


@register_format("qa_feedback")
def qa_feedback(row: Row, location: str) -> Example:
    """One qa-feedback row (Fine-Grained RLHF, Wu et al. 2023) -> K predictions scored by wins.

    ``preference`` holds one judgment per pair (1v2, 1v3, 1v4, 2v3, 2v4, 3v4 for K=4):
    1 = the first wins, 2 = the second wins, 0 = no preference. ``score_i`` is the
    number of pairs prediction i won, so equal win counts are ties. The prompt is::

        question: {question}
        context: wikipage: {title 1}
        text: {sentences of passage 1, joined by spaces, whitespace runs collapsed}
        wikipage: {title 2}
        ...
        answer:

    (The paper's own prompts put these on one line; alignkit keeps one field a line.)
    Responses stay verbatim (no leading space) because the ``feedback`` error spans
    index characters of ``prediction 1`` (``responses[0]``). ``meta`` carries
    ``feedback`` (errors, missing-info, corrected-prediction), ``question``,
    ``passages`` and ``gold`` for the fine-grained reward code.
    """
    question = _string(row, "question")
    if not question.strip():
        raise BadRow("question is empty")
    passages = _list(row, "passages")
    k = 0
    while row.get(f"prediction {k + 1}") is not None:
        k += 1
    if k < 2:
        raise BadRow(f"missing field 'prediction {k + 1}'")
    predictions = [
        _response_text(_string(row, f"prediction {i}"), f"prediction {i}") for i in range(1, k + 1)
    ]
    wins = _wins(_list(row, "preference"), k)
    meta: dict[str, Any] = {"question": question, "passages": passages}
    if row.get("gold") is not None:
        meta["gold"] = row["gold"]
    if row.get("feedback") is not None:
        meta["feedback"] = _checked_feedback(row["feedback"], predictions[0])
    return _listwise(_qa_prompt(question, passages), predictions, wins, location, meta)


def _wins(preference: list, k: int) -> list[float]:
    pairs = list(combinations(range(k), 2))
    if len(preference) != len(pairs):
        raise BadRow(f"preference has {len(preference)} judgments, expected {len(pairs)} for {k} predictions")
    wins = [0.0] * k
    for n, ((i, j), p) in enumerate(zip(pairs, preference), start=1):
        if isinstance(p, bool) or p not in (0, 1, 2):
            raise BadRow(f"preference {n} must be 0, 1 or 2, got {p!r}")
        if p == 1:
            wins[i] += 1
        elif p == 2:
            wins[j] += 1
    return wins


def _qa_prompt(question: str, passages: list) -> str:
    blocks = []
    for n, p in enumerate(passages, start=1):
        if not (isinstance(p, list) and p and all(isinstance(s, str) for s in p)):
            raise BadRow(f"passage {n} must be a list of strings [title, text, ...]")
        text = " ".join(" ".join(p[1:]).split())  # runs of whitespace -> one space, as in the paper's prompts
        blocks.append(f"wikipage: {p[0]}\ntext: {text}")
    return f"question: {question}\ncontext: {chr(10).join(blocks)}\nanswer:"


def _checked_feedback(feedback: Any, prediction: str) -> dict:
    if not isinstance(feedback, dict):
        raise BadRow(f"feedback must be an object, got {type(feedback).__name__}")
    for n, e in enumerate(feedback.get("errors") or [], start=1):
        start, end = (e.get("start"), e.get("end")) if isinstance(e, dict) else (None, None)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(prediction)):
            raise BadRow(f"feedback error {n} needs 0 <= start <= end <= {len(prediction)} (prediction 1)")
    return feedback


@register_format("span_feedback")
def span_feedback(row: Row, location: str) -> Example:
    """``{prompt, response, spans}``: character spans ``[start, end)`` of the response with a ``category``.

    Becomes one response whose ``meta["feedback"]["errors"]`` holds the spans in qa-feedback's
    keys (``start``, ``end``, ``error type``), so :func:`alignkit.data.spans.span_examples`
    reads both formats alike. ``spans`` may be empty (an answer without errors).
    """
    prompt = _prompt_text(_field(row, "prompt"))
    response = _string(row, "response")
    if response == "":
        raise BadRow("response is empty")
    errors = []
    for n, span in enumerate(_list(row, "spans"), start=1):
        if not isinstance(span, dict) or not isinstance(span.get("category"), str) or not span["category"]:
            raise BadRow(f"span {n} must be an object with start, end and a non-empty category")
        start, end = span.get("start"), span.get("end")
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not (ok and 0 <= start < end <= len(response)):
            raise BadRow(f"span {n} needs integers 0 <= start < end <= {len(response)} (the response's length)")
        errors.append({"start": start, "end": end, "error type": span["category"]})
    return Example(prompt, [response], source=location, meta={"feedback": {"errors": errors}})


@register_format("unpaired")
def unpaired(row: Row, location: str) -> Example:
    prompt = _prompt_text(_field(row, "prompt"))
    completion = _response_text(_field(row, "completion"), "completion")
    (completion,) = _same_form(prompt, [completion], ["completion"])
    label = _field(row, "label")
    if isinstance(label, bool):
        good = label
    elif isinstance(label, int) and label in (0, 1):
        good = bool(label)
    else:
        raise BadRow(f"label must be true or false, got {label!r}")
    return Example(prompt, [completion], scores=[float(good)], desirable=[good], source=location)


@register_format("prompt")
def prompt_only(row: Row, location: str) -> Example:
    return Example(_prompt_text(_field(row, "prompt")), [], source=location)


@register_format("sft")
def sft(row: Row, location: str) -> Example:
    if row.get("messages") is not None:
        messages = _chat(_list(row, "messages"), "messages")
        last = messages[-1]
        if last["role"] != "assistant":
            raise BadRow(f"messages must end with an assistant message, got role {last['role']!r}")
        if len(messages) < 2:
            raise BadRow("messages has no turn before the last assistant message")
        response = _response_text([last], "the last assistant message")
        return Example(messages[:-1], [response], source=location, meta={"messages": messages})
    if row.get("prompt") is not None or row.get("completion") is not None:
        prompt = _prompt_text(_field(row, "prompt"))
        completion = _response_text(_field(row, "completion"), "completion")
        (completion,) = _same_form(prompt, [completion], ["completion"])
        return Example(prompt, [completion], source=location)
    if row.get("text") is None:
        raise BadRow("missing field 'messages', 'text' or 'prompt' with 'completion'")
    text = _string(row, "text")
    if not text.strip():
        raise BadRow("text is empty")
    return Example("", [text], source=location, meta={"whole_text": True})


# 3. Detection --------------------------------------------------


def detect_format(row: Row) -> str | None:
    """The format of a row from its (non-null) columns; the first rule that matches wins.

    1. ``prediction 1`` and ``preference``          -> qa_feedback;
       ``response`` and ``spans``                   -> span_feedback
    2. ``responses`` or ``ranking``                 -> ranked
    3. ``chosen`` and ``rejected``: with ``prompt``, or chat lists -> pairwise;
       strings without ``prompt``                   -> hh_rlhf
    4. ``completion`` and ``label``                 -> unpaired
    5. ``messages``, ``text``, or ``prompt`` and ``completion`` -> sft
    6. ``prompt``                                   -> prompt
    """
    cols = {k for k, v in row.items() if v is not None}
    if {"prediction 1", "preference"} <= cols:
        return "qa_feedback"
    if {"response", "spans"} <= cols:
        return "span_feedback"
    if cols & {"responses", "ranking"}:
        return "ranked"
    if {"chosen", "rejected"} <= cols:
        return "pairwise" if "prompt" in cols or isinstance(row["chosen"], list) else "hh_rlhf"
    if {"completion", "label"} <= cols:
        return "unpaired"
    if cols & {"messages", "text"} or {"prompt", "completion"} <= cols:
        return "sft"
    if "prompt" in cols:
        return "prompt"
    return None
