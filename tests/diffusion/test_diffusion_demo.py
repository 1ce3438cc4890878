"""The digits demo end to end (slow: it pretrains the DDPM unless the cache has it)."""

import pytest

from alignkit.diffusion import DIFFUSION_METHODS

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")


@pytest.mark.slow
def test_digits_demo_every_method_raises_the_classifier_reward(tmp_path):
    from alignkit.diffusion.demo import DigitsDemoConfig, run_digits_demo

    cfg = DigitsDemoConfig(output_dir=str(tmp_path / "out"), soup_method="", progress=False)
    result = run_digits_demo(cfg)
    start = result.rows["start"]["classifier"]
    for method in DIFFUSION_METHODS:
        assert result.rows[method]["classifier"] > start, method
        assert result.rows[method]["kl"] > 0
    assert (tmp_path / "out" / "report.html").exists()


def test_unknown_method_fails_before_any_training(tmp_path):
    from alignkit.diffusion.demo import DigitsDemoConfig, run_digits_demo
    from alignkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown diffusion method 'dpo'"):
        run_digits_demo(DigitsDemoConfig(output_dir=str(tmp_path), methods=["dpo"]))
