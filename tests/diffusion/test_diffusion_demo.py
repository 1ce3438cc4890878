"""The digits demo end to end (slow: it pretrains the DDPM unless the cache has it)."""

import pytest

from alignkit.diffusion import DIFFUSION_METHODS

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")


@pytest.mark.slow
def test_digits_demo_runs_every_method_and_the_best_beats_the_start(tmp_path):
    """What the measured runs support (README, 3 seeds): the best methods (Diffusion-DPO +0.016 with s.e.
    0.004, D3PO since its pairs share x_T and its clip binds) beat the start model; not every method does
    at this budget (RAFT did not)."""
    from alignkit.diffusion.demo import DigitsDemoConfig, run_digits_demo

    cfg = DigitsDemoConfig(output_dir=str(tmp_path / "out"), soup_method="", progress=False)
    result = run_digits_demo(cfg)
    start = result.rows["start"]["classifier"]
    assert max(result.rows[method]["classifier"] for method in DIFFUSION_METHODS) > start + 0.005
    assert all(result.rows[method]["kl"] > 0 for method in DIFFUSION_METHODS)
    assert (tmp_path / "out" / "report.html").exists()


def test_unknown_method_fails_before_any_training(tmp_path):
    from alignkit.diffusion.demo import DigitsDemoConfig, run_digits_demo
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown diffusion method 'dpo'"):
        run_digits_demo(DigitsDemoConfig(output_dir=str(tmp_path), methods=["dpo"]))
