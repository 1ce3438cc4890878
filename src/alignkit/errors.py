"""User-facing errors.

Anything a user can cause (a bad file, a bad row, a bad config value, a missing
model) raises :class:`AlignkitError`. The CLI prints its message on one line and
exits non-zero without a traceback; everything else is a bug and keeps its
traceback.
"""


class AlignkitError(Exception):
    """An error the user can fix; the message says where and what to do."""


class ConfigError(AlignkitError):
    """A config key is unknown, mistyped or out of range."""


class DataError(AlignkitError):
    """An input file or row cannot be used; the message names FILE:LINE."""
