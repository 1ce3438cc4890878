"""The registry is the only place a method name is resolved."""

import pytest

from alignkit.errors import ConfigError
from alignkit.losses import LOSSES, check_hyperparameters, get_loss, hyperparameters

EXPECTED = {"dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "rrhf", "pro", "listwise_dpo", "kto",
            "bradley_terry", "kwise"}
REFERENCE = {"dpo", "ipo", "r_dpo", "listwise_dpo", "kto"}


def test_every_method_is_registered_with_its_reference_need():
    assert EXPECTED <= set(LOSSES)
    for name in EXPECTED:
        assert LOSSES[name].needs_reference == (name in REFERENCE), name


def test_unknown_hyperparameter_and_method_are_config_errors():
    with pytest.raises(ConfigError, match=r"loss\.betta: method 'dpo' has no hyper-parameter 'betta'; allowed: beta, label_smoothing"):
        check_hyperparameters("dpo", {"betta": 0.1})
    with pytest.raises(ConfigError, match="unknown method 'dpoo'"):
        get_loss("dpoo")
    assert hyperparameters("simpo") == {"beta": 2.0, "gamma": 1.0}
