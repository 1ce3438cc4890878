"""Range: membership at the edges and the wording of its error."""

import math

import pytest

from alignkit.errors import ConfigError
from alignkit.ranges import AT_LEAST_ONE, POSITIVE, UNIT_OPEN_RIGHT, Range, as_number


def test_edges_and_descriptions():
    assert not POSITIVE.contains(0.0) and POSITIVE.contains(1e-30) and POSITIVE.describe() == "> 0"
    assert AT_LEAST_ONE.contains(1) and not AT_LEAST_ONE.contains(0) and AT_LEAST_ONE.describe() == ">= 1"
    assert UNIT_OPEN_RIGHT.contains(0.0) and not UNIT_OPEN_RIGHT.contains(1.0)
    assert UNIT_OPEN_RIGHT.describe() == "in [0, 1)"
    assert not Range().contains(math.nan) and not Range().contains(math.inf)
    with pytest.raises(ConfigError, match=r"^train.adam_betas\[1\]: must be in \[0, 1\), got 1.0$"):
        UNIT_OPEN_RIGHT.check("train.adam_betas[1]", 1.0)


def test_as_number_reads_yaml_strings():
    assert as_number("k", "1e-30") == 1e-30
    assert as_number("k", 3.0, integer=True) == 3
    for bad in ("high", True, None, [1]):
        with pytest.raises(ConfigError, match="^k: expected a number"):
            as_number("k", bad)
    with pytest.raises(ConfigError, match="^k: expected an integer, got 2.5$"):
        as_number("k", 2.5, integer=True)
