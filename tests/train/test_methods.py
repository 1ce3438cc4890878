"""The method registry: every method has one spec, read by every part of alignkit, and nothing else
compares method names."""

import ast
from pathlib import Path

import pytest

import alignkit
from alignkit.config import load_config
from alignkit.errors import ConfigError
from alignkit.losses import LOSSES
from alignkit.train.methods import METHODS, MethodSpec, StepShape, all_methods, method_spec
from alignkit.train.run import register_trainer, run_train

METHOD_NAMES = sorted(all_methods())
FAMILIES = {"sft", "reward_model", "preference", "sampling", "rl"}
DATA_SHAPES = {"sft", "pairs", "ranked", "unpaired", "prompts"}


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_has_a_complete_spec(name):
    spec = method_spec(name)
    assert spec.name == name and spec.family in FAMILIES and spec.data in DATA_SHAPES
    assert callable(spec.trainer) and callable(spec.check)
    assert spec.implicit_reward in ("ratio", "logp")
    cfg = load_config(None, [f"method={name}"])
    assert spec.step_shape.batches_per_step(cfg) >= 1 and spec.step_shape.stages(cfg) >= 1
    if spec.family == "sampling":
        assert spec.default_update in all_methods() or spec.default_update in LOSSES


def test_each_registry_entry_is_a_method_of_its_family():
    from alignkit.train.algorithms import ALGORITHMS
    from alignkit.train.selection import SELECTORS

    methods = all_methods()
    for name, fn in LOSSES.items():
        if fn.trains == "policy":
            spec = methods[name]
            assert (spec.family, spec.uses, spec.data, spec.needs_reference) == ("preference", name, fn.data,
                                                                                 fn.needs_reference)
            assert spec.implicit_reward == ("ratio" if fn.needs_reference else "logp")
        else:  # a reward model's loss is no method of its own
            assert name not in methods
    assert {n for n, s in methods.items() if s.family == "sampling"} == set(SELECTORS)
    assert {n for n, s in methods.items() if s.family == "rl"} == set(ALGORITHMS)


def test_an_unknown_method_is_a_config_error_listing_the_methods(tmp_path):
    with pytest.raises(ConfigError, match=r"method: unknown method 'dpoo'; choose one of: .*dpo.*sft"):
        run_train(load_config(None, ["method=dpoo", f"train.output_dir={tmp_path}"]))
    assert not (tmp_path / "config.yaml").exists()  # nothing written before the checks


def test_a_plugin_trainer_registers_a_method_with_its_step_shape(monkeypatch, tmp_path):
    import alignkit.train.methods as methods

    monkeypatch.setattr(methods, "METHODS", dict(METHODS))
    calls = []
    register_trainer("my_method", StepShape(batches_per_step=lambda cfg: 3))(lambda cfg: calls.append(cfg) or tmp_path)
    spec = method_spec("my_method")
    assert isinstance(spec, MethodSpec) and spec.family == "my_method"
    assert spec.step_shape.batches_per_step(None) == 3 and spec.step_shape.stages(None) == 1
    assert run_train(load_config(None, ["method=my_method", f"train.output_dir={tmp_path}"])) == tmp_path
    assert len(calls) == 1


def method_name_comparisons(path: Path) -> list[str]:
    """``x.method == "dpo"`` or ``method in ("rloo", "grpo")``: a method's name tested outside its spec."""
    names = set(METHOD_NAMES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        literals = set()
        for op in operands:
            items = op.elts if isinstance(op, (ast.Tuple, ast.List, ast.Set)) else [op]
            literals |= {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
        if literals & names and any("method" in ast.unparse(op) for op in operands):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_method_name_is_compared_outside_the_registry():
    package = Path(alignkit.__file__).parent
    found = [hit for path in sorted(package.rglob("*.py")) for hit in method_name_comparisons(path)]
    assert not found, found


def test_the_comparison_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('if cfg.method in ("rloo", "grpo"):\n    pass\nif cfg.method == "kto":\n    pass\n')
    assert len(method_name_comparisons(bad)) == 2
