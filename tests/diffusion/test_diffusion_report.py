"""The digits report: seeds aggregated with their standard error, one grid per model, soup section."""

import json
from types import SimpleNamespace

import pytest
import torch

from alignkit.diffusion.report import aggregate, write_digits_report

pytest.importorskip("matplotlib")


def _run(clf, ink, kl, seed=None):
    run = {"rewards": {"classifier": {"mean": clf, "se": 0.0}, "ink": {"mean": ink, "se": 0.0}}, "kl": kl,
           "diversity": 3.0, "seconds": 10.0}
    return run if seed is None else {**run, "seed": seed}


def test_aggregate_is_the_mean_and_standard_error_across_seeds():
    """classifier over seeds [0.8, 0.9, 1.0]: mean 0.9, sample std 0.1, s.e. 0.1 / sqrt 3 = 0.057735."""
    row = aggregate([_run(0.8, 0.3, 1.0, 0), _run(0.9, 0.3, 2.0, 1), _run(1.0, 0.3, 3.0, 2)])
    assert row["classifier"] == pytest.approx(0.9) and row["classifier_se"] == pytest.approx(0.057735, abs=1e-6)
    assert row["kl"] == pytest.approx(2.0) and row["seeds"] == 3
    assert row["per_seed_classifier"] == [0.8, 0.9, 1.0]


def test_report_has_the_table_a_grid_per_model_and_the_soup(tmp_path):
    runs = {"start": [_run(0.7, 0.3, 0.0)], "ddpo": [_run(0.9, 0.28, 50.0, 0), _run(0.8, 0.29, 40.0, 1)]}
    grids = {label: torch.rand(10 * 4, 1, 8, 8) * 2 - 1 for label in runs}
    soup = [{"lambda_ink": lam, **_run(0.9 - 0.2 * lam, 0.3 + 0.1 * lam, 20.0)} for lam in (0.0, 0.5, 1.0)]
    cfg = SimpleNamespace(eval_per_prompt=4, rounds=2, prompts_per_round=8, samples_per_prompt=4, num_steps=10,
                          soup_method="ddpo")
    table, rows = write_digits_report(tmp_path, runs, grids, soup, {"pretrain": 1.0, "total": 2.0}, cfg, 0.95, True)
    assert "| ddpo | 2 | 0.850 ± 0.050 | +0.150 |" in table
    page = (tmp_path / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3  # two grids and the Pareto plot
    assert "Rewarded soup" in page and "λ_ink=0.5" in page
    assert {p.name for p in tmp_path.glob("grid_*.png")} == {"grid_start.png", "grid_ddpo.png"}
    assert (tmp_path / "grids.png").stat().st_size > 0  # every grid side by side (the README's figure)
    assert json.loads((tmp_path / "results.json").read_text())["rows"]["ddpo"]["seeds"] == 2
