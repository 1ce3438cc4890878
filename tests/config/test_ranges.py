"""Range: membership at the edges and the wording of its error."""

import math

import pytest

from alignkit.config.ranges import AT_LEAST_ONE, POSITIVE, UNIT_OPEN_RIGHT, Range, as_number
from alignkit.errors import ConfigError


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


def numeric_keys(cls, prefix=""):
    """Dotted keys of every int / float (or list / optional of them) field under dataclass ``cls``."""
    import dataclasses
    import typing

    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = args[0] if typing.get_origin(tp) is list or len(args) == 1 else tp
        suffix = "[*]" if typing.get_origin(tp) is list else ""
        if dataclasses.is_dataclass(inner):
            keys += numeric_keys(inner, f"{key}{suffix}.")
        elif inner in (int, float):
            keys.append(key + suffix)
    return keys


def test_every_numeric_config_field_has_a_range():
    from alignkit.config import Config
    from alignkit.config.ranges import CONFIG_RANGES

    keys = numeric_keys(Config)
    assert len(keys) > 40
    assert sorted(set(keys) - set(CONFIG_RANGES)) == []
    assert sorted(set(CONFIG_RANGES) - set(keys)) == []  # no stale entry either


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rate=-1e-5", r"train.learning_rate: must be > 0, got -1e-05"),
        ("train.batch_size=0", r"train.batch_size: must be >= 1, got 0"),
        ("train.batch_size=-2", r"train.batch_size: must be >= 1, got -2"),
        ("train.grad_accum=0", r"train.grad_accum: must be >= 1, got 0"),
        ("train.max_steps=-5", r"train.max_steps: must be >= 0, got -5"),
        ("train.adam_betas=[0.9,1.5]", r"train.adam_betas\[1\]: must be in \[0, 1\), got 1.5"),
        ("train.adam_betas=[0.9]", r"train.adam_betas: expected a list of 2 numbers, got \[0.9\]"),
        ("model.lora.r=0", r"model.lora.r: must be >= 1, got 0"),
        ("sampling.num_samples=0", r"sampling.num_samples: must be >= 1, got 0"),
        ("sampling.temperature=-1", r"sampling.temperature: must be >= 0, got -1.0"),
        ("rewards=[{kind: length, weight: .inf}]", r"rewards\[0\].weight: must be a finite number, got inf"),
    ],
)
def test_out_of_range_config_values_name_the_key_and_the_range(override, message):
    from alignkit.config import load_config

    with pytest.raises(ConfigError, match=f"^{message}$"):
        load_config(None, [override])


@pytest.mark.parametrize("method", ["ppo", "raft"])
def test_trainers_that_learn_from_samples_need_a_positive_temperature(method):
    from alignkit.config import load_config
    from alignkit.train import ppo, sampling

    check = ppo.check_config if method == "ppo" else sampling.check_config
    cfg = load_config(None, [f"method={method}", "sampling.temperature=0", "rewards=[{kind: length}]"])
    with pytest.raises(ConfigError, match=rf"^sampling.temperature: must be > 0 for method '{method}'"):
        check(cfg)
