"""Example -> TokenizedExample: prompt ids and K response ids, nothing else.

The loss of every method covers the response tokens only, so the one thing this
module must get right is the boundary between prompt and response, and the end of
each response.

Three shapes of row:

- **Plain text** (string prompt, string responses; or any row when the tokenizer
  has no chat template and the row is not chat-shaped): ``prompt_ids =
  tokenizer(prompt)`` with the tokenizer's special tokens (a BOS if it adds one),
  each response ``tokenizer(response, add_special_tokens=False)``. Prompt and
  response are tokenized *separately on purpose*: a BPE merge across the boundary
  (``"Assistant:" + " fine"``) would put response text inside a prompt token, and
  the response tokens would then depend on the prompt. The price is that
  ``prompt_ids + response_ids`` may differ from ``tokenizer(prompt + response)``
  at the seam; generation from ``prompt_ids`` sees the same seam, so this is the
  consistent choice. An empty prompt becomes ``[bos]``.
- **Chat** (``example.is_chat()`` and the tokenizer has a ``chat_template``; a
  string prompt becomes one user message, a string response one assistant
  message): ``prompt_ids`` is the rendered prompt with the generation prompt; a
  response is the rendered ``prompt + response`` conversation minus that prefix
  (a template that breaks the prefix property is an error, not a bad row). The
  template's end-of-turn marker stays in the response; whitespace the template
  writes after it (``<|im_end|>\\n``) is dropped.
- **Whole text** (``meta["whole_text"]``, SFT ``{"text": ...}``): ``prompt_ids =
  [bos]`` and the response is the whole text, so the loss covers every token. A
  tokenizer without BOS gives the text's first token as the prompt.

With ``chat_strings`` (a chat model's configs set ``data.chat_strings: true``) a string row is
made chat-shaped first and takes the chat path: an Anthropic HH dialogue prompt
(``"\n\nHuman: ...\n\nAssistant:"``) becomes its turns, any other string prompt one user
message, and each string response one assistant message (stripped of surrounding whitespace).

End of a response: with ``add_eos`` a response that ended carries exactly ONE
``tokenizer.eos_token_id`` at its end. It is appended unless the last token
already is EOS (a chat template whose end-of-turn is the EOS token, or a string
response that ends with the EOS text): appending a second one is a known TRL bug.

Truncation (lengths in tokens), by rule, never by stopping the run:

1. A prompt longer than ``max_prompt_length`` (default: half of ``max_length``; it must be
   below ``max_length``) is truncated: ``keep_end`` (default) keeps its END, left-truncating
   (a leading BOS is kept; a chat prompt's generation prompt is at its end, so it survives);
   ``keep_start`` keeps its start, as TRL's ``truncation_mode="keep_start"``. With
   ``drop_long_prompts`` such a row is dropped instead.
2. Each response is cut at the right to ``max_length - len(prompt_ids)``. A cut
   response carries NO EOS: it did not end.
3. :func:`tokenize_examples` reports once how many prompts were truncated (or rows dropped)
   and how many responses were cut, with a warning when any response kept under
   ``warn_response_fraction`` (one half) of its tokens.
4. An empty response (no token before the EOS) makes a bad row:
   :class:`~alignkit.errors.DataError` ``"FILE:LINE: reason"``, which
   :func:`tokenize_examples` skips and counts when ``skip_bad_rows=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from alignkit.data.schema import Example, Message, Text, TokenizedExample, as_text
from alignkit.errors import AlignkitError, ConfigError, DataError

logger = logging.getLogger(__name__)

_CHUNK = 1024  # rows batch-encoded together by tokenize_examples


@dataclass
class TokenizeConfig:
    """Length budgets and the end-of-sequence policy."""

    max_prompt_length: int = 0
    """Prompt budget in tokens (0: half of ``max_length``); below ``max_length``."""
    max_length: int = 1024
    """Budget of the prompt plus ONE response, in tokens; a longer response is cut and loses its EOS."""
    add_eos: bool = True
    """End every complete response with exactly one EOS token."""
    chat_strings: bool = False
    """Render string rows (HH dialogues, prompt/chosen/rejected strings) with the chat template."""
    truncation: Literal["keep_end", "keep_start"] = "keep_end"
    """Which part of a long prompt is kept."""
    drop_long_prompts: bool = False
    """Drop the rows whose prompt is longer than the budget instead of truncating it."""
    warn_response_fraction: float = 0.5
    """Warn when a response is cut to under this fraction of its tokens."""

    def __post_init__(self) -> None:
        if self.max_prompt_length == 0:
            self.max_prompt_length = self.max_length // 2
        if self.max_prompt_length < 1 or self.max_length < 2:
            raise ConfigError(
                f"data.max_prompt_length must be >= 1 (0: half of max_length) and data.max_length >= 2, got "
                f"{self.max_prompt_length} and {self.max_length}"
            )
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be below data.max_length "
                f"({self.max_length}) to leave room for a response; lower it, or set 0 for half of max_length"
            )


class LongPrompt(DataError):
    """A row dropped because its prompt is over budget (``drop_long_prompts``)."""


@dataclass
class TruncationCounts:
    """What truncation did to a set of rows, for one report."""

    prompts_truncated: int = 0
    rows_dropped: int = 0
    responses: int = 0
    responses_cut: int = 0
    responses_cut_short: int = 0  # kept under warn_response_fraction of their tokens
    first_short: list[str] = field(default_factory=list)

    def report(self, cfg: TokenizeConfig, rows: int) -> None:
        kept = "end" if cfg.truncation == "keep_end" else "start"
        if self.prompts_truncated:
            logger.info("truncated %d of %d prompts to max_prompt_length %d tokens (kept their %s; "
                        "data.truncation chooses)", self.prompts_truncated, rows, cfg.max_prompt_length, kept)
        if self.rows_dropped:
            logger.warning("dropped %d of %d rows whose prompt is longer than max_prompt_length %d "
                           "(data.drop_long_prompts)", self.rows_dropped, rows, cfg.max_prompt_length)
        if self.responses_cut:
            logger.info("cut %d of %d responses to fit max_length %d (a cut response has no EOS)",
                        self.responses_cut, self.responses, cfg.max_length)
        if self.responses_cut_short:
            logger.warning("%d responses kept under %d%% of their tokens within max_length %d (first: %s); "
                           "raise data.max_length or lower data.max_prompt_length", self.responses_cut_short,
                           round(100 * cfg.warn_response_fraction), cfg.max_length, "; ".join(self.first_short))


def tokenize_example(example: Example, tokenizer, cfg: TokenizeConfig | None = None) -> TokenizedExample:
    """Tokenize one example; a bad row raises :class:`DataError` naming ``example.source``."""
    return _tokenize(example, tokenizer, cfg or TokenizeConfig(), example.source or "example")


def tokenize_examples(
    examples: Iterable[Example],
    tokenizer,
    cfg: TokenizeConfig | None = None,
    *,
    skip_bad_rows: bool = False,
    desc: str = "",
) -> list[TokenizedExample]:
    """Tokenize many examples; plain-text rows are batch-encoded.

    With ``skip_bad_rows`` a row raising :class:`DataError` is dropped and the
    number dropped is logged as a warning (with the first reasons); otherwise the
    first bad row raises. Template errors (:class:`AlignkitError` that is not a
    ``DataError``) always raise: they would hit every row. ``desc`` names a progress bar
    (shown once tokenizing has taken two seconds).
    """
    from tqdm.auto import tqdm

    cfg = cfg or TokenizeConfig()
    bar = tqdm(desc=desc, unit=" rows", disable=not desc, delay=2.0)
    out: list[TokenizedExample] = []
    skipped: list[str] = []
    chunk: list[Example] = []
    counts = TruncationCounts()
    start = 0
    for example in examples:
        chunk.append(example)
        if len(chunk) == _CHUNK:
            _tokenize_chunk(chunk, start, tokenizer, cfg, skip_bad_rows, out, skipped, counts)
            bar.update(len(chunk))
            start, chunk = start + len(chunk), []
    _tokenize_chunk(chunk, start, tokenizer, cfg, skip_bad_rows, out, skipped, counts)
    bar.update(len(chunk))
    bar.close()
    if skipped:
        logger.warning("skipped %d bad rows; first: %s", len(skipped), "; ".join(skipped[:3]))
    counts.report(cfg, start + len(chunk))
    return [ex for ex in out if ex is not None]


def _tokenize_chunk(chunk, start, tokenizer, cfg, skip_bad_rows, out, skipped, counts=None) -> None:
    """Batch-encode the plain rows of ``chunk`` in two calls, then finish every row."""
    originals, chunk = chunk, [_chat_form(ex, tokenizer, cfg) for ex in chunk]
    plain = [i for i, ex in enumerate(chunk) if _is_plain(ex, tokenizer)]
    prompts = _encode(tokenizer, [chunk[i].prompt for i in plain], special=True)
    responses = _encode(tokenizer, [r for i in plain for r in chunk[i].responses], special=False)
    pre: dict[int, tuple[list[int], list[list[int]]]] = {}
    offset = 0
    for i, prompt_ids in zip(plain, prompts):
        k = chunk[i].num_responses
        pre[i] = (prompt_ids, responses[offset : offset + k])
        offset += k
    for i, example in enumerate(originals):  # _tokenize takes each row as written (it applies the chat form)
        where = example.source or f"example {start + i}"
        try:
            out.append(_tokenize(example, tokenizer, cfg, where, pre.get(i), counts))
        except DataError as err:
            if not skip_bad_rows:
                raise
            skipped.append(str(err))


def _tokenize(
    example: Example,
    tokenizer,
    cfg: TokenizeConfig,
    where: str,
    plain_ids: tuple[list[int], list[list[int]]] | None = None,
    counts: TruncationCounts | None = None,
) -> TokenizedExample | None:
    """One row: raw ids by shape, then the EOS policy, the empty check and truncation (None: a row
    dropped for its long prompt)."""
    prompt_text = as_text(example.prompt)  # the row as written, before its chat form: what evaluation scores
    example = _chat_form(example, tokenizer, cfg)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise AlignkitError("the tokenizer has no eos_token; set tokenizer.eos_token before tokenizing")
    for i, response in enumerate(example.responses):
        if _is_empty(response):
            raise DataError(f"{where}: response {i} is empty")
    plain = _is_plain(example, tokenizer)  # raises on chat rows without a template
    if example.meta.get("whole_text"):
        prompt_ids, responses = _whole_text_ids(example, tokenizer, where, cfg.add_eos)
    elif plain:
        prompt_ids, responses = plain_ids or (
            _encode(tokenizer, [example.prompt], special=True)[0],
            _encode(tokenizer, example.responses, special=False),
        )
        prompt_ids = prompt_ids or _bos_or_fail(tokenizer, where)
        responses = [_end_with_eos(r, eos, cfg.add_eos) for r in responses]
    else:
        prompt_ids, responses = _chat_ids(example, tokenizer, where, cfg.add_eos)
    for i, ids in enumerate(responses):
        if len(ids) - (1 if ids and ids[-1] == eos else 0) < 1:
            raise DataError(f"{where}: response {i} is empty")
    if cfg.drop_long_prompts and len(prompt_ids) > cfg.max_prompt_length:
        if counts is None:
            raise LongPrompt(f"{where}: prompt of {len(prompt_ids)} tokens is longer than max_prompt_length "
                            f"{cfg.max_prompt_length}")
        counts.rows_dropped += 1
        return None
    prompt_ids, responses = _truncate(prompt_ids, responses, tokenizer.bos_token_id, cfg, where, counts)
    return TokenizedExample(
        prompt_ids=prompt_ids,
        response_ids=responses,
        scores=None if example.scores is None else list(example.scores),
        desirable=None if example.desirable is None else list(example.desirable),
        source=example.source,
        prompt_text=prompt_text,
    )


def _truncate(prompt_ids, responses, bos, cfg: TokenizeConfig, where: str, counts: TruncationCounts | None = None):
    """Keep the prompt's end (and a leading BOS) or its start; cut each response to the room left
    (at least ``max_length - max_prompt_length`` tokens)."""
    counts = counts if counts is not None else TruncationCounts()
    n = cfg.max_prompt_length
    if len(prompt_ids) > n:
        counts.prompts_truncated += 1
        if cfg.truncation == "keep_start":
            prompt_ids = prompt_ids[:n]
        else:
            keep_bos = bos is not None and prompt_ids[0] == bos and n > 1
            prompt_ids = [bos, *prompt_ids[-(n - 1) :]] if keep_bos else prompt_ids[-n:]
    room = cfg.max_length - len(prompt_ids)
    counts.responses += len(responses)
    for i, r in enumerate(responses):
        if len(r) > room:
            counts.responses_cut += 1
            if room < cfg.warn_response_fraction * len(r):
                counts.responses_cut_short += 1
                if len(counts.first_short) < 3:
                    counts.first_short.append(f"{where} response {i}: {room} of {len(r)} tokens")
    return list(prompt_ids), [list(r[:room]) for r in responses]


# ---- the three shapes -------------------------------------------------------------


def _is_plain(example: Example, tokenizer) -> bool:
    """A plain-text row: string prompt and responses, not whole text. Chat rows need a template."""
    if example.is_chat() and not getattr(tokenizer, "chat_template", None):
        raise AlignkitError(
            f"{example.source or 'example'}: the row is chat-shaped (lists of messages) but the "
            "tokenizer has no chat_template; set tokenizer.chat_template or use string prompts"
        )
    return not example.is_chat() and not example.meta.get("whole_text")


def _chat_form(example: Example, tokenizer, cfg: TokenizeConfig) -> Example:
    """A string row as chat messages when ``cfg.chat_strings`` and the tokenizer has a template."""
    if not cfg.chat_strings or example.is_chat() or example.meta.get("whole_text"):
        return example
    if not getattr(tokenizer, "chat_template", None):
        raise AlignkitError("data.chat_strings is on but the tokenizer has no chat_template; turn it off")
    from dataclasses import replace

    responses = [[{"role": "assistant", "content": r.strip()}] for r in example.responses]
    return replace(example, prompt=dialogue_messages(example.prompt), responses=responses)


def dialogue_messages(prompt: str) -> list[Message]:
    """``"\n\nHuman: hi\n\nAssistant: hello\n\nHuman: why?\n\nAssistant:"`` -> user / assistant / user
    messages (the open last Assistant turn is the generation prompt); any other string is one user message."""
    import re

    parts = re.split(r"\n\n(Human|Assistant):", prompt)
    if len(parts) < 3 or parts[0].strip():
        return [{"role": "user", "content": prompt.strip()}] if prompt.strip() else []
    messages = [{"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
                for speaker, text in zip(parts[1::2], parts[2::2])]
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def _chat_ids(example: Example, tokenizer, where: str, add_eos: bool):
    """Prompt with the generation prompt; each response = full conversation minus that prefix."""
    prompt_msgs = _as_messages(example.prompt, "user")
    if not prompt_msgs:
        raise DataError(f"{where}: a chat row needs at least one prompt message")
    prompt_ids = _render(tokenizer, [prompt_msgs], where, add_generation_prompt=True)[0]
    if not example.responses:
        return prompt_ids, []
    fulls = _render(tokenizer, [prompt_msgs + _as_messages(r, "assistant") for r in example.responses], where)
    responses = []
    for i, full in enumerate(fulls):
        if full[: len(prompt_ids)] != prompt_ids:
            raise AlignkitError(
                f"{where}: the chat template does not render the prompt (with its generation prompt) "
                f"as a prefix of prompt + response {i}, so the response tokens cannot be separated; "
                "use a template with this prefix property"
            )
        responses.append(_end_turn(full[len(prompt_ids) :], tokenizer, add_eos))
    return prompt_ids, responses


def _whole_text_ids(example: Example, tokenizer, where: str, add_eos: bool):
    """``[bos]`` (or the first token) as prompt, the whole text as each response."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    fulls = []
    for response in example.responses:
        if example.is_chat():
            msgs = _as_messages(example.prompt, "user") + _as_messages(response, "assistant")
            fulls.append(_end_turn(_render(tokenizer, [msgs], where)[0], tokenizer, add_eos))
        else:
            ids = _encode(tokenizer, [example.prompt + response], special=False)[0]
            fulls.append(_end_with_eos(ids, eos, add_eos))
    if bos is not None:
        return [bos], [f[1:] if f[:1] == [bos] else f for f in fulls]
    if not fulls:
        raise DataError(f"{where}: a whole-text row has no text")
    first = fulls[0][:1]
    if any(f[:1] != first for f in fulls):
        raise DataError(f"{where}: whole-text responses start with different tokens and there is no BOS")
    return first, [f[1:] for f in fulls]


# ---- helpers -------------------------------------------------------------------------


def _encode(tokenizer, texts: Sequence[str], special: bool) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=special)["input_ids"]]


def _render(tokenizer, conversations: list[list[Message]], where: str, add_generation_prompt=False):
    """Token ids of each conversation under the chat template; template errors name the row."""
    from jinja2 import TemplateError

    try:
        ids = tokenizer.apply_chat_template(
            conversations, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
    except (TemplateError, KeyError, TypeError) as err:
        raise DataError(f"{where}: the chat template failed: {err}") from err
    return [list(x) for x in ids]


def _end_turn(ids: list[int], tokenizer, add_eos: bool) -> list[int]:
    """Drop whitespace written after a final special token (``<|im_end|>\\n``), then end with one EOS."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    end = len(ids)
    while end > 0 and ids[end - 1] not in special and not tokenizer.decode([ids[end - 1]]).strip():
        end -= 1
    if 0 < end < len(ids) and ids[end - 1] in special:
        ids = ids[:end]
    return _end_with_eos(ids, tokenizer.eos_token_id, add_eos)


def _end_with_eos(ids: list[int], eos: int, add_eos: bool) -> list[int]:
    """Exactly one EOS at the end: none added when the last token already is EOS."""
    return [*ids, eos] if add_eos and (not ids or ids[-1] != eos) else list(ids)


def _bos_or_fail(tokenizer, where: str) -> list[int]:
    if tokenizer.bos_token_id is None:
        raise DataError(f"{where}: the prompt is empty and the tokenizer has no BOS token to stand for it")
    return [tokenizer.bos_token_id]


def _as_messages(text: Text, role: str) -> list[Message]:
    """A chat text as messages: a non-empty string becomes one message with ``role``."""
    if isinstance(text, str):
        return [{"role": role, "content": text}] if text else []
    return list(text)


def _is_empty(text: Text) -> bool:
    if isinstance(text, str):
        return text == ""
    return all(not m.get("content") for m in text)
