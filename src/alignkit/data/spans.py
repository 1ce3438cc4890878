"""Span feedback -> labelled segments: the training data of fine-grained reward models.

Fine-Grained RLHF (Wu et al. 2023, https://arxiv.org/abs/2306.01693, sec. 4.1) cuts an
answer into segments and gives each one label per error category:

- **sentences** (the factuality model): the paper uses spaCy's sentencizer; alignkit
  splits after a run of ``.``, ``!`` or ``?`` (closing quotes and brackets kept) that is
  followed by whitespace, and before a newline, except after a one-letter initial
  (``"J. R. R."``) or a common abbreviation (``"Dr."``, ``"e.g."``, ``"U.S."``).
- **sub-sentences** (the relevance model): each sentence is cut further after a
  whitespace-separated word ending in ``,``, ``;``, ``!`` or ``?`` (the paper's
  ``[,;!?]``), with its minimum of 5 words: no cut leaves fewer than 5 words after it,
  and a piece shorter than 5 words joins the sub-sentence before it (the first piece of
  a sentence, having none before it, runs on to the next cut).

A segment is a ``(start, end)`` character range of the response, without its surrounding
whitespace. Its label, for a model of the error ``categories``: 1 when an error span of
one of them overlaps it (``span.start < end and span.end > start``), else 0. Like the
paper (its appendix D): error spans of fewer than ``min_span_words`` words are dropped
(5 for the relevance categories, none for factuality), and with ``ignore_other_errors``
(factuality) a segment whose only errors are of other categories is left out of training
(label ``None``): the annotators marked one error per word, so an irrelevant sentence was
never checked for facts.

Examples come from any :class:`~alignkit.data.schema.Example` whose ``meta["feedback"]``
has ``errors`` spans over ``responses[0]``: the ``qa_feedback`` format (spans on
``prediction 1``) and the ``span_feedback`` format (``docs/fine_grained.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from alignkit.data.schema import Example

LEVELS = ("sentence", "sub_sentence")
MIN_SUBSENTENCE_WORDS = 5  # the paper's MIN_SUBSENT_WORDS
RELEVANCE = ("Irrelevant", "Redundant", "Incoherent")  # the paper's relevance / redundancy model (C1)
FACTUALITY = ("Wrong-Grounding", "Unverifiable")  # the factuality model (C2); "Wrong-Grounding" is
# the paper's "inconsistent fact"

Segment = tuple[int, int]  # (start, end) characters of the response, end exclusive

# a sentence ends at a run of .!? (plus closing quotes/brackets) before whitespace, or at a newline
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|\n")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "inc", "co",
                  "ltd", "mt", "ft", "u.s", "u.k", "a.m", "p.m", "jan", "feb", "aug", "sept", "oct", "nov", "dec"}
_CLAUSE_END = ",;!?"


def _strip(text: str, start: int, end: int) -> Segment | None:
    """``(start, end)`` narrowed to its non-whitespace characters; None when there are none."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the ``.`` at ``dot`` ends an initial or an abbreviation, not a sentence."""
    if text[dot] != "." or (dot + 1 < len(text) and text[dot + 1] in ".!?"):
        return False
    word = text[:dot].rsplit(None, 1)[-1] if text[:dot].strip() else ""
    word = word.lstrip("(\"'[")
    return (len(word) == 1 and word.isalpha()) or word.lower() in _ABBREVIATIONS


def sentences(text: str) -> list[Segment]:
    """The sentences of ``text`` as ``(start, end)`` ranges (see the module doc)."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.group() != "\n" and _is_abbreviation(text, m.start()):
            continue
        seg = _strip(text, start, m.end())
        if seg:
            out.append(seg)
        start = m.end()
    seg = _strip(text, start, len(text))
    return out + [seg] if seg else out


def sub_sentences(text: str, min_words: int = MIN_SUBSENTENCE_WORDS) -> list[Segment]:
    """Each sentence cut after words ending in ``,;!?``, keeping pieces of ``min_words`` words."""
    out = []
    for s_start, s_end in sentences(text):
        words = [(m.start() + s_start, m.end() + s_start) for m in re.finditer(r"\S+", text[s_start:s_end])]
        starts = [0]  # word indices that start a sub-sentence
        for i in range(1, len(words)):
            if text[words[i - 1][1] - 1] not in _CLAUSE_END or i + min_words >= len(words):
                continue
            if i - starts[-1] >= min_words:
                starts.append(i)
            elif starts[-1] > 0:  # the short piece since the last cut joins the sub-sentence before it
                starts[-1] = i
        bounds = starts + [len(words)]
        out += [(words[a][0], words[b - 1][1]) for a, b in zip(bounds, bounds[1:])]
    return out


def segment(text: str, level: str) -> list[Segment]:
    """``text`` cut at ``level``: ``"sentence"`` or ``"sub_sentence"``."""
    if level == "sentence":
        return sentences(text)
    if level == "sub_sentence":
        return sub_sentences(text)
    raise ValueError(f"unknown segment level {level!r}; expected one of {LEVELS}")


def label_segments(
    text: str,
    segments: Sequence[Segment],
    errors: Sequence[dict],
    categories: Sequence[str],
    min_span_words: int = 0,
    ignore_other_errors: bool = False,
) -> list[int | None]:
    """1 / 0 per segment: overlapped by an error span of ``categories`` or not (None: left out).

    ``errors`` are ``{"start", "end", "error type"}`` character spans of ``text`` (the
    qa-feedback keys; ``category`` is read too). See the module doc for the two rules.
    """

    def kind(e: dict) -> str:
        return e.get("error type") or e.get("category") or ""

    def overlaps(e: dict, seg: Segment) -> bool:
        return e["start"] < seg[1] and e["end"] > seg[0]

    mine = [e for e in errors if kind(e) in categories and len(text[e["start"]:e["end"]].split()) >= min_span_words]
    others = [e for e in errors if kind(e) not in categories]
    labels: list[int | None] = []
    for seg in segments:
        if any(overlaps(e, seg) for e in mine):
            labels.append(1)
        elif ignore_other_errors and any(overlaps(e, seg) for e in others):
            labels.append(None)
        else:
            labels.append(0)
    return labels


@dataclass
class SpanExample:
    """One answer cut into segments, each labelled for one error category set (None: not trained on)."""

    prompt: str  # the context the reward model reads before the answer (qa: question and passages)
    response: str
    segments: list[Segment]
    labels: list[int | None]
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def labelled(self) -> list[int]:
        """Indices of the segments with a label."""
        return [i for i, y in enumerate(self.labels) if y is not None]


def span_examples(
    examples: Sequence[Example],
    level: str,
    categories: Sequence[str],
    min_span_words: int = 0,
    ignore_other_errors: bool = False,
) -> list[SpanExample]:
    """The span examples of every example with ``meta["feedback"]`` (others are skipped).

    The response is ``responses[0]`` (qa-feedback's ``prediction 1``), the context the
    example's prompt. Answers without a labelled segment are dropped.
    """
    from alignkit.data.schema import as_text

    out = []
    for ex in examples:
        feedback = ex.meta.get("feedback")
        if not feedback or not ex.responses:
            continue
        response = as_text(ex.responses[0])
        segments = segment(response, level)
        labels = label_segments(response, segments, feedback.get("errors") or [], categories,
                                min_span_words, ignore_other_errors)
        span = SpanExample(as_text(ex.prompt), response, segments, labels, ex.source)
        if span.labelled:
            out.append(span)
    return out


def split_by_prompt(examples: Sequence[Example], eval_size: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out) with every prompt (question) wholly on one side: the paper's split by question.

    ``eval_size``: prompts held out, a fraction when below 1.
    """
    from alignkit.data.examples import split_train_eval
    from alignkit.data.schema import as_text

    keys = list(dict.fromkeys(as_text(ex.prompt) for ex in examples))
    size = {"eval_fraction": eval_size} if eval_size < 1 else {"eval_size": int(eval_size)}
    _, held_keys = split_train_eval(keys, seed=seed, **size)
    held = set(held_keys)
    return ([ex for ex in examples if as_text(ex.prompt) not in held],
            [ex for ex in examples if as_text(ex.prompt) in held])
