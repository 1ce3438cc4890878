"""A user reward module that fails at import, for tests/rewards/test_simple.py."""

raise RuntimeError("this module is broken on purpose")
