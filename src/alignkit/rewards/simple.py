"""Rewards that need no model: response length, and any user function.

A user function is given as ``"module:function"`` (the module must be importable:
installed, or on ``PYTHONPATH``) or passed as a callable. It is called as
``fn(prompts, responses)`` and returns either

- N numbers (a list, tuple, numpy array or 1-D tensor): a sequence-level reward, or
- N lists of ``(end, value)`` pairs: a dense reward, ``end`` being an exclusive
  character position in the response (see :mod:`alignkit.rewards.base`).

Anything else raises :class:`~alignkit.errors.AlignkitError` naming the function.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable
from typing import Any

import torch

from alignkit.errors import AlignkitError
from alignkit.rewards.base import Reward, Segment, check_batch, sum_segments

RETURN_HELP = "return one float per response, or one list of (end, value) segments per response"


class LengthReward(Reward):
    """Response length: whitespace-separated words (``unit="words"``) or characters (``"chars"``)."""

    def __init__(self, unit: str = "words", name: str = "length"):
        if unit not in ("words", "chars"):
            raise ValueError(f"unknown length unit {unit!r}; expected 'words' or 'chars'")
        self.unit = unit
        self.name = name

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        check_batch(prompts, responses)
        sizes = [len(r.split()) if self.unit == "words" else len(r) for r in responses]
        return torch.tensor(sizes, dtype=torch.float32)


def import_function(target: str) -> Callable[..., Any]:
    """The callable named by ``"module:function"`` (``function`` may be dotted: ``"m:Class.method"``)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise AlignkitError(
            f"function reward {target!r}: give it as 'module:function', e.g. 'my_rewards:politeness'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module itself failing at import
        raise AlignkitError(
            f"function reward {target!r}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
            "install it or put its folder on PYTHONPATH"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AlignkitError(
                f"function reward {target!r}: module {module_name!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise AlignkitError(f"function reward {target!r}: {attr!r} is not callable ({type(obj).__name__})")
    return obj


class FunctionReward(Reward):
    """A user callable ``fn(prompts, responses)`` as a reward (see the module doc for what it returns).

    ``dense`` only tells callers to expect segments; what the function returns decides:
    numbers give one segment per response, segments sum to the score.
    """

    def __init__(self, fn: str | Callable[..., Any], name: str = "", dense: bool = False):
        self.target = fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))
        self.fn = import_function(fn) if isinstance(fn, str) else fn
        self.name = name or self.target.rpartition(":")[2]
        self.dense = dense

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        out = self._call(prompts, responses)
        return sum_segments(out) if isinstance(out, list) else out

    def score_segments(self, prompts: list[str], responses: list[str]) -> list[list[Segment]]:
        out = self._call(prompts, responses)
        if isinstance(out, list):
            return out
        return [[(len(r), s)] for r, s in zip(responses, out.tolist())]

    def _call(self, prompts: list[str], responses: list[str]) -> torch.Tensor | list[list[Segment]]:
        """Call the function; a ``[N]`` tensor for numbers, a list of sorted segment lists for dense."""
        check_batch(prompts, responses)
        out = self.fn(list(prompts), list(responses))
        n = len(responses)
        if isinstance(out, (list, tuple)) and n and all(isinstance(x, (list, tuple)) for x in out):
            if len(out) != n:
                raise self._error(f"returned {len(out)} segment lists for {n} responses")
            return [self._segments(segs, r) for segs, r in zip(out, responses)]
        if isinstance(out, (list, tuple)) and not all(_is_number(x) for x in out):
            bad = next(x for x in out if not _is_number(x))
            raise self._error(f"returned a list holding a {type(bad).__name__}")
        try:
            scores = torch.as_tensor(out, dtype=torch.float32).cpu()
        except (TypeError, ValueError, RuntimeError):
            raise self._error(f"returned a {type(out).__name__}") from None
        if scores.shape != (n,):
            raise self._error(f"returned shape {tuple(scores.shape)} for {n} responses")
        return scores

    def _segments(self, segs: list | tuple, response: str) -> list[Segment]:
        out = []
        for seg in segs:
            if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_is_number(x) for x in seg)):
                raise self._error(f"returned a segment {seg!r}; a segment is (end, value)")
            end = int(seg[0])
            if not 0 <= end <= len(response):
                raise self._error(
                    f"returned a segment ending at {end} in a response of {len(response)} characters"
                )
            out.append((end, float(seg[1])))
        return sorted(out, key=lambda s: s[0])

    def _error(self, what: str) -> AlignkitError:
        return AlignkitError(f"function reward {self.target!r} {what}; it must {RETURN_HELP}")


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) or (isinstance(x, torch.Tensor) and x.numel() == 1)
