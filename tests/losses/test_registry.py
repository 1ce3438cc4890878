"""The registry is the only place a method name is resolved, and every registered loss
honours the same contract."""

import inspect

import pytest
import torch

from alignkit.errors import ConfigError
from alignkit.losses import LOSSES, RankedBatch, check_hyperparameters, get_loss, hyperparameters

REFERENCE = {"dpo", "ipo", "r_dpo", "listwise_dpo", "kto"}
REFERENCE_FREE = {"simpo", "cpo", "orpo", "slic_hf", "rrhf", "pro", "bradley_terry", "kwise"}
EXPECTED = REFERENCE | REFERENCE_FREE
METRICS = {"rewards/accuracy", "rewards/chosen", "rewards/rejected", "rewards/margin", "logps/chosen", "logps/rejected"}

# The paper defaults (sources in each function's docstring).
DEFAULTS = {
    "dpo": {"beta": 0.1, "label_smoothing": 0.0},
    "ipo": {"beta": 0.1},
    "r_dpo": {"beta": 0.1, "alpha": 0.01},
    "simpo": {"beta": 2.0, "gamma": 0.5},
    "cpo": {"beta": 0.1, "nll_weight": 1.0},
    "orpo": {"lam": 0.1},
    "slic_hf": {"delta": 1.0, "lam": 0.1},
    "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
    "rrhf": {"lam": 1.0},
    "pro": {"beta": 0.05, "temperature": 1.0},
    "listwise_dpo": {"beta": 0.1},
    "bradley_terry": {"margin": 0.0},
    "kwise": {},
}


def test_every_method_is_registered_with_its_reference_need():
    assert EXPECTED <= set(LOSSES)
    for name in EXPECTED:
        assert get_loss(name) is LOSSES[name]
        assert LOSSES[name].needs_reference == (name in REFERENCE), name
        assert LOSSES[name].method_name == name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_hyperparameters_are_keyword_only_with_paper_defaults(name):
    params = list(inspect.signature(LOSSES[name]).parameters.values())
    assert params[0].name == "batch" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert hyperparameters(name) == DEFAULTS.get(name, hyperparameters(name))
    check_hyperparameters(name, hyperparameters(name))  # every known key passes
    doc = inspect.getdoc(LOSSES[name])
    assert "arXiv" in doc and ("eq." in doc or "appendix" in doc), name


def test_unknown_hyperparameter_and_method_are_config_errors():
    with pytest.raises(ConfigError, match=r"loss\.betta: method 'dpo' has no hyper-parameter 'betta'; "
                                          r"allowed: beta, label_smoothing"):
        check_hyperparameters("dpo", {"betta": 0.1})
    with pytest.raises(ConfigError, match=r"allowed: \(none\)"):
        check_hyperparameters("kwise", {"margin": 0.0})
    with pytest.raises(ConfigError, match="unknown method 'dpoo'"):
        get_loss("dpoo")


def example_batch(with_ref: bool, dtype=torch.float32) -> RankedBatch:
    """Two prompts, K=3: a ranking with a tie, and a pair plus padding."""
    policy = torch.tensor([[-4.0, -6.0, -9.0], [-3.0, -5.0, float("nan")]], dtype=dtype, requires_grad=True)
    ref = torch.tensor([[-5.0, -5.0, -8.0], [-4.0, -4.0, float("nan")]], dtype=dtype) if with_ref else None
    return RankedBatch(policy, ref, torch.tensor([[2.0, 3.0, 4.0], [1.0, 2.0, 0.0]]),
                       torch.tensor([[2.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
                       torch.tensor([[True, True, True], [True, True, False]]))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_contract(name):
    fn = LOSSES[name]
    losses, metrics = fn(example_batch(with_ref=fn.needs_reference))
    assert losses.shape == (2,) and losses.dtype == torch.float32 and torch.isfinite(losses).all()
    assert losses.requires_grad
    assert METRICS <= set(metrics)
    for key, value in metrics.items():
        value = torch.as_tensor(value)
        assert value.ndim == 0 and not value.requires_grad and torch.isfinite(value), key
    # bfloat16 inputs are computed in float32
    assert fn(example_batch(with_ref=fn.needs_reference, dtype=torch.bfloat16))[0].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(n for n, fn in LOSSES.items() if fn.needs_reference))
def test_reference_methods_refuse_a_batch_without_reference(name):
    with pytest.raises(ValueError, match="ref_logps"):
        LOSSES[name](example_batch(with_ref=False))
