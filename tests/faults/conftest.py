"""Fixtures of the fault matrix (the runs themselves are in ``fault_runs.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fault_runs import FAMILIES


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def straight_runs(tmp_path_factory):
    """``family -> run folder`` of an uninterrupted 6-step run, built on first use."""
    from alignkit.train.run import run_train

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            out = tmp_path_factory.mktemp(f"straight_{family}") / "run"
            run_train(FAMILIES[family](out))
            built[family] = out
        return built[family]

    return get


