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


_DISK_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def disk_full(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) is a full disk or exhausted quota.

    Not every writer raises ``OSError(ENOSPC)``: safetensors raises its own error carrying the
    OS message, so the chain's messages are read too."""
    import errno

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(err) for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False
