"""The one in-memory shape every method consumes.

Every loader (pairwise, HH-RLHF raw, ranked, qa-feedback, unpaired, prompt-only,
SFT) turns a row into an :class:`Example`: a prompt with K >= 0 responses and,
when the data carries a preference, one score per response (higher is better,
equal scores are ties). Pairwise data is K=2 with ``scores=[1.0, 0.0]``; a
ranking ``[best, ..., worst]`` becomes scores ``[K-1, ..., 0]``.

A prompt or response is either a plain string or a list of chat messages
(``{"role": ..., "content": ...}``) following TRL's conventions: a chat prompt
is the conversation so far, a chat response is the assistant turn(s) after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]
Text = Union[str, list[Message]]


@dataclass
class Example:
    """A prompt with K responses and their preference information.

    Attributes:
        prompt: the context, a string or a list of chat messages. Empty for
            whole-text SFT rows (``{"text": ...}``), where the loss covers all tokens.
        responses: K candidate continuations (K=0 for prompt-only data).
        scores: one float per response, higher is better, ties allowed; ``None``
            when the data has no preference (SFT, prompts only).
        desirable: per-response True/False for unpaired (KTO) data, else ``None``.
        source: ``"FILE:LINE"`` of the row, for error messages.
        meta: anything else a loader wants to carry (e.g. dense feedback spans).
    """

    prompt: Text
    responses: list[Text] = field(default_factory=list)
    scores: list[float] | None = None
    desirable: list[bool] | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_responses(self) -> int:
        return len(self.responses)

    def is_chat(self) -> bool:
        return isinstance(self.prompt, list) or any(isinstance(r, list) for r in self.responses)

    def ranked(self) -> list[int]:
        """Response indices from best to worst (stable for ties)."""
        if self.scores is None:
            return list(range(len(self.responses)))
        return sorted(range(len(self.responses)), key=lambda i: -self.scores[i])


@dataclass
class TokenizedExample:
    """An :class:`Example` after tokenization: what the log-prob engine consumes.

    Attributes:
        prompt_ids: the prompt's token ids (chat template applied, generation
            prompt included); never empty (a whole-text row starts with BOS).
        response_ids: K lists of token ids; a response that ended carries exactly
            one EOS at its end, a response cut by the length budget carries none.
        scores: as in :class:`Example` (``None`` when there is no preference).
        desirable: as in :class:`Example`.
        source: ``"FILE:LINE"`` of the row.
        prompt_text: the row's prompt as rewards read it (:func:`as_text`, before truncation and the chat
            template), so that an RL rollout scores what evaluation scores; ``""`` for rows built from ids.
    """

    prompt_ids: list[int]
    response_ids: list[list[int]]
    scores: list[float] | None = None
    desirable: list[bool] | None = None
    source: str = ""
    prompt_text: str = ""

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + sum(len(r) for r in self.response_ids)


def as_text(text: str | list[dict[str, str]]) -> str:
    """A plain-text rendering for rewards: a string as is, chat messages as ``role: content`` lines."""
    if isinstance(text, str):
        return text
    return "\n".join(f"{m['role']}: {m['content']}" for m in text)
