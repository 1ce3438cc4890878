"""Every module imports, every shipped YAML config loads, and the pure parts import with torch alone."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import alignkit
from alignkit.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def all_modules():
    return sorted(m.name for m in pkgutil.walk_packages(alignkit.__path__, "alignkit."))


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def config_class(path):
    """Train configs are the default; eval/compare/soup configs are named by prefix."""
    from alignkit.eval.compare import CompareConfig
    from alignkit.eval.runner import EvalConfig
    from alignkit.eval.soup import SoupConfig

    classes = {"eval_": EvalConfig, "compare_": CompareConfig, "soup_": SoupConfig}
    return next((c for prefix, c in classes.items() if path.name.startswith(prefix)), None)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads(path):
    if "accelerate" in path.parts:
        pytest.skip("Accelerate launcher configs are read by accelerate, not alignkit")
    cls = config_class(path)
    if cls is not None:
        from alignkit.eval.compare import CompareConfig, check_compare

        cfg = load_config(path, cls=cls)
        if cls is CompareConfig:
            check_compare(cfg)  # builds every method's train config
        return
    cfg = load_config(path)
    from alignkit.train.methods import method_spec

    method_spec(cfg.method).check(cfg)  # every check run_train does before loading a model


def test_losses_and_engine_import_with_torch_alone():
    code = (
        "import sys, alignkit.losses, alignkit.engine, alignkit.losses.rl, alignkit.eval.metrics\n"
        "heavy = [m for m in ('transformers', 'accelerate', 'peft', 'datasets', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
