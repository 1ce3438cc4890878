"""What a trainer needs from its examples, checked on every row before any model is loaded.

A format only says what a row holds; whether that is enough depends on the method.
SFT on prompt-only rows would train at loss 0, KTO on rows without a completion
would fail deep in collation, a preference loss on rows without a preference would
learn nothing. Each check here names the first row that lacks what the method
needs (its ``FILE:LINE``) and what kind of data would do, as a
:class:`~alignkit.errors.DataError`.

:data:`NEEDS` maps a requirement name to its check; :data:`NEED_OF_DATA` maps the data a
loss is registered for (``register_loss(..., data=...)``) to its requirement, and a trainer
calls :func:`check_examples` (through ``load_split(..., need=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alignkit.data.schema import Example
from alignkit.errors import DataError

Check = Callable[[Example], "str | None"]  # None when the row is fine, else what it lacks


def _responses(ex: Example) -> str | None:
    if ex.num_responses == 0:
        return "has no response to train on (only a prompt)"
    return None


def _preference(ex: Example) -> str | None:
    if ex.num_responses < 2 or ex.scores is None:
        return f"has no preference ({ex.num_responses} response{'s' * (ex.num_responses != 1)}, no scores)"
    return None


def _labels(ex: Example) -> str | None:
    if ex.num_responses == 0:
        return "has no completion to label (only a prompt)"
    if ex.desirable is None and _preference(ex) is not None:
        return "has neither a desirable/undesirable label nor a preference"
    return None


NEEDS: dict[str, tuple[Check, str]] = {
    # name: (check, the data that satisfies it)
    "responses": (_responses, "rows with a response: {prompt, completion}, {text}, {messages}, or any preference data"),
    "preferences": (_preference, "pairwise {prompt, chosen, rejected}, hh_rlhf or ranked rows"),
    "labels": (_labels, "unpaired {prompt, completion, label} rows, or pairwise / ranked rows"),
}


# the rows a loss is made for (``alignkit.losses.registry.DATA_SHAPES``) -> what every row must carry
NEED_OF_DATA = {"pairs": "preferences", "ranked": "preferences", "unpaired": "labels"}


def check_examples(examples: Sequence[Example], need: str, *, method: str, key: str = "data.train") -> None:
    """Raise a :class:`DataError` at the first example that lacks ``need`` (a name in :data:`NEEDS`).

    Rows of preference data whose responses all tie are allowed (a ranked row may tie); only when
    no row at all has a preference is that an error, since the run would learn nothing.
    """
    check, wanted = NEEDS[need]
    for ex in examples:
        problem = check(ex)
        if problem is not None:
            raise DataError(f"{ex.source or key}: {problem}; method {method!r} needs {wanted}")
    if need == "preferences" and examples and not any(len(set(ex.scores or [])) > 1 for ex in examples):
        raise DataError(
            f"{examples[0].source or key}: every row's responses tie, so there is no preference to learn; "
            f"method {method!r} needs {wanted} with differing scores"
        )
