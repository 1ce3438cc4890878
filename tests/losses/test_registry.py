"""The registry is the only place a method name is resolved, and every registered loss
honours the same contract."""

import inspect

import pytest
import torch
from helpers import batch

from alignkit.errors import ConfigError
from alignkit.losses import LOSSES, RankedBatch, check_hyperparameters, get_loss, hyperparameters

REFERENCE = {"dpo", "ipo", "r_dpo", "listwise_dpo", "kto"}
REFERENCE_FREE = {"simpo", "cpo", "orpo", "slic_hf", "rrhf", "pro", "bradley_terry", "kwise"}
EXPECTED = REFERENCE | REFERENCE_FREE
METRICS = {"rewards/accuracies", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"}
REWARD_MODEL_METRICS = {"accuracy", "margin", "mean_reward"}  # a reward model's losses: TRL's RewardTrainer names

# The paper defaults (sources in each function's docstring).
DEFAULTS = {
    "dpo": {"beta": 0.1, "label_smoothing": 0.0},
    "ipo": {"beta": 0.1, "length_normalise": False},
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
    assert (REWARD_MODEL_METRICS if fn.trains == "reward_model" else METRICS) <= set(metrics)
    for key, value in metrics.items():
        value = torch.as_tensor(value)
        assert value.ndim == 0 and not value.requires_grad and torch.isfinite(value), key
    # bfloat16 inputs are computed in float32
    assert fn(example_batch(with_ref=fn.needs_reference, dtype=torch.bfloat16))[0].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(n for n, fn in LOSSES.items() if fn.needs_reference))
def test_reference_methods_refuse_a_batch_without_reference(name):
    with pytest.raises(ValueError, match="ref_logps"):
        LOSSES[name](example_batch(with_ref=False))


def _accuracy_by_kind(kind, policy, ref, lengths):
    """1.0 when response 0 (the better) scores higher than response 1 under ``kind``, else 0.0."""
    score = {
        "logp": policy,
        "mean_logp": [p / n for p, n in zip(policy, lengths)],
        "ratio": [p - r for p, r in zip(policy, ref)],
    }[kind]
    return float(score[0] > score[1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declared_implicit_reward_is_the_score_the_loss_ranks_by(name):
    """Evaluation reads ``implicit_reward`` to score held-out preferences (the defect: SimPO,
    ORPO and PRO were scored with summed log-probs). Two batches separate the three kinds:
    A: policy [-10, -6], lengths [20, 4], ref [-14, -4]: logp 0, mean_logp 1 (-0.5 > -1.5), ratio 1 (4 > -2);
    B: the same with ref [-6, -10]: logp 0, mean_logp 1, ratio 0 (-4 < 4).
    The loss's own accuracy metric must agree with the declared kind on both."""
    fn = LOSSES[name]
    assert fn.implicit_reward in ("ratio", "logp", "mean_logp")
    for ref in ([-14.0, -4.0], [-6.0, -10.0]):
        b = batch([[-10.0, -6.0]], ref=[ref], lengths=[[20.0, 4.0]], scores=[[1.0, 0.0]], desirable=[[True, False]])
        _, metrics = fn(b)
        expected = _accuracy_by_kind(fn.implicit_reward, [-10.0, -6.0], ref, [20.0, 4.0])
        key = "accuracy" if fn.trains == "reward_model" else "rewards/accuracies"  # TRL's names
        assert float(metrics[key]) == expected, (name, ref)


def test_length_normalised_losses_declare_mean_logp_and_pairwise_losses_pairs():
    from alignkit.train.methods import method_spec

    assert method_spec("simpo").implicit_reward == "mean_logp"  # the spec reads the loss's declaration
    assert {n for n, f in LOSSES.items() if f.implicit_reward == "mean_logp"} == {"simpo", "orpo", "pro", "rrhf"}
    assert {n for n, f in LOSSES.items() if f.data == "pairs" and f.trains == "policy"} == {
        "dpo", "ipo", "r_dpo", "simpo", "cpo", "orpo", "slic_hf", "hinge"
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"beta": "high"}, "loss.beta: expected a number, got 'high'"),
        ({"beta": 0}, "loss.beta: must be > 0, got 0.0"),
        ({"beta": -1}, "loss.beta: must be > 0, got -1.0"),
        ({"beta": float("inf")}, "loss.beta: must be a finite number, got inf"),
        ({"label_smoothing": 0.5}, r"loss.label_smoothing: must be in \[0, 0.5\), got 0.5"),
        ({"beta": True}, "loss.beta: expected a number, got True"),
    ],
)
def test_hyperparameters_are_type_checked_and_ranged(given, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_hyperparameters("dpo", given)


def test_yaml_strings_that_are_numbers_become_floats():
    given = {"beta": "1e-30"}  # YAML 1.1 reads 1e-30 (no dot) as a string
    check_hyperparameters("ipo", given)
    assert given == {"beta": 1e-30}
    with pytest.raises(ConfigError, match="^loss.length_normalise: expected true or false, got 'yes'$"):
        check_hyperparameters("ipo", {"length_normalise": "yes"})


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_default_is_in_its_range(name):
    check_hyperparameters(name, dict(hyperparameters(name)))
