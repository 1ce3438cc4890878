"""The package's layers import downwards only, and the config layer stays torch-free.

Layers, lowest first (a module may import its own layer and the ones below it):

0. ``errors``, ``config``, ``in_memory``: typed settings, no torch;
1. ``distributed``, ``losses``, ``data``: leaf helpers, pure math, data loading;
2. ``engine``: log-probs and generation;
3. ``models``: loading, references, heads;
4. ``rewards``, and the pure metrics of ``eval.metrics``;
5. ``train``: the runtime and the trainers;
6. ``eval``, ``demo``, ``label``, ``diffusion`` (a family with its own policy, trainer and demo), the Python API (``api``) and every ``cli.py``: what a user runs.

``alignkit.train(...)`` and ``alignkit.evaluate`` etc. are the API reached through the
packages' facades, resolved on first use by name (``importlib``), not dependencies of them.

Every import is read, also those inside functions (alignkit imports heavy modules lazily),
so a lazy import cannot hide a cycle either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import alignkit

PACKAGE = Path(alignkit.__file__).parent

LAYERS: list[set[str]] = [
    {"alignkit", "alignkit.errors", "alignkit.config", "alignkit.in_memory"},
    {"alignkit.distributed", "alignkit.losses", "alignkit.data"},
    {"alignkit.engine"},
    {"alignkit.models"},
    {"alignkit.rewards", "alignkit.eval.metrics"},
    {"alignkit.train"},
    {"alignkit.eval", "alignkit.demo", "alignkit.label", "alignkit.diffusion", "alignkit.cli", "alignkit.__main__",
     "alignkit.api"},
]
TOP = len(LAYERS) - 1


def layer_of(module: str) -> int:
    """The layer of the longest listed prefix of ``module``; a ``cli`` module is always on top."""
    if module.rsplit(".", 1)[-1] == "cli":
        return TOP
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        for i, layer in enumerate(LAYERS):
            if prefix in layer:
                return i
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS in {__file__}")


def alignkit_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every alignkit import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("alignkit"):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("alignkit")]
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def test_every_import_points_downwards():
    wrong = []
    for module, path in modules():
        own = layer_of(module)
        for line, target in alignkit_imports(path):
            if layer_of(target) > own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {own}) imports "
                             f"{target} (layer {layer_of(target)})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_engine_and_models_never_import_train():
    for module, path in modules():
        if module.startswith(("alignkit.engine", "alignkit.models")) and not module.endswith(".cli"):
            assert not [t for _, t in alignkit_imports(path) if t.startswith("alignkit.train")], path


@pytest.mark.parametrize("module", ["alignkit.config", "alignkit.errors"])
def test_config_layer_imports_without_torch(module):
    """A config loads and is checked before any heavy import (and `alignkit --help` stays quick)."""
    code = (f"import sys, {module}\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate', 'numpy') if m in sys.modules)\n"
            "ours = sorted(m for m in sys.modules if m.startswith('alignkit.') and not m.startswith("
            "('alignkit.config', 'alignkit.errors')))\n"
            "print(heavy, ours)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] []", out


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check itself can fail: an engine module importing the trainers is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from alignkit.train.loop import train_loop\n")
    (line, target), = alignkit_imports(bad)
    assert line == 2 and layer_of(target) > layer_of("alignkit.engine.bad")
    assert layer_of("alignkit.engine.cli") == TOP and layer_of("alignkit.eval.metrics") < layer_of("alignkit.train")
