"""Data: every input format becomes :class:`~alignkit.data.schema.Example`."""

from alignkit.data.schema import Example, Message, Text

__all__ = ["Example", "Message", "Text"]
