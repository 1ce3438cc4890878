"""Allowed ranges of numeric settings, checked before any work with one message per bad key.

A :class:`Range` says which numbers a key takes and says so in its error:
``train.batch_size: must be >= 1, got 0``. Used by the config checks
(:mod:`alignkit.config`) and by the loss hyper-parameter checks
(:func:`alignkit.losses.check_hyperparameters`). Imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignkit.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """``low <(=) value <(=) high``; ``None`` leaves a side open, ``*_inclusive`` says ``<=``."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{'<=' if self.high_inclusive else '<'} {_num(self.high)}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)))

    def check(self, key: str, value: float) -> None:
        """Raise a :class:`ConfigError` naming ``key`` and this range unless ``value`` is in it."""
        if not self.contains(value):
            raise ConfigError(f"{key}: must be {self.describe()}, got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


FINITE = Range()
POSITIVE = Range(0, None, low_inclusive=False)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)  # [0, 1]
UNIT_OPEN_RIGHT = Range(0, 1, high_inclusive=False)  # [0, 1)


def as_number(key: str, value: object, *, integer: bool = False) -> float | int:
    """``value`` as a float (or an int), accepting YAML's strings such as ``"1e-30"``; else a ConfigError."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if integer:
        if not float(value).is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    return float(value)
