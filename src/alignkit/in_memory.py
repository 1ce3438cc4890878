"""Objects handed to the Python API (a model, a tokenizer, a ``datasets.Dataset``) travel in the
config as names, so that the config stays a plain, saveable record and the trainers stay as they are.

:func:`hold` keeps an object and returns its name, ``<in-memory ROLE: CLASS ... #N>``, which goes in
the config where a path would (``model.name_or_path``, ``data.train``, ...). The loaders look a
name up with :func:`lookup` before treating it as a path; the saved ``config.yaml`` keeps the
name, which says what the object was. A name from another process (a config saved by an API run
and reused from the command line) finds nothing here, and the loader says to give a path.
"""

from __future__ import annotations

import itertools
from typing import Any

PREFIX = "<in-memory "
_held: dict[str, Any] = {}
_counter = itertools.count(1)


def describe(obj: Any) -> str:
    """``CLASS`` and, when the object records it, ``from NAME_OR_PATH`` (what a model was loaded from)."""
    source = source_path(obj)
    return type(obj).__name__ + (f" from {source}" if source else "")


def hold(obj: Any, role: str) -> str:
    """Keep ``obj`` and return the name that stands for it in a config."""
    name = f"{PREFIX}{role}: {describe(obj)} #{next(_counter)}>"
    _held[name] = obj
    return name


def lookup(name: Any) -> Any | None:
    """The object held under ``name``, or None when ``name`` is not an in-memory name held here."""
    return _held.get(name) if isinstance(name, str) and name.startswith(PREFIX) else None


def is_name(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def missing(name: str, key: str):
    """The error for an in-memory name this process does not hold."""
    from alignkit.errors import ConfigError

    return ConfigError(
        f"{key}: {name} names an object that was passed to the Python API in another session; "
        "give a path or a Hub id instead"
    )


def release(*names: str) -> None:
    for name in names:
        _held.pop(name, None)


def source_path(obj: Any) -> str:
    """What ``obj`` (a model or tokenizer) was loaded from, or '' (built in memory)."""
    source = getattr(obj, "name_or_path", "") or getattr(getattr(obj, "config", None), "_name_or_path", "")
    return source if isinstance(source, str) else ""
