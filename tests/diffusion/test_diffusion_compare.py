"""``alignkit compare`` with diffusion methods: trains each, reports rewards, KL, diversity and a grid each."""

import json

import pytest

from alignkit.config import from_dict
from alignkit.errors import ConfigError
from alignkit.eval.compare import CompareConfig, run_compare

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")


@pytest.fixture
def tiny_start(monkeypatch, tmp_path):
    """The cached digits DDPM replaced by an untrained 8-channel UNet (pretraining takes minutes)."""
    import alignkit.diffusion.digits as digits

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digits, "cached_digits_unet",
                        lambda cache, cfg, progress=False: (digits.build_digits_unet(0, width=8).eval(), True))


def _config(tmp_path, methods, **extra):
    data = {"output_dir": str(tmp_path / "cmp"), "budget": {"max_steps": 1},
            "base": {"model": {"name_or_path": "digits"}, "rewards": [{"kind": "classifier"}],
                     "train": {"batch_size": 4, "learning_rate": 1e-3, "progress": False},
                     "sampling": {"batch_size": 2, "num_samples": 2}},
            "rewards": [{"kind": "classifier"}, {"kind": "ink"}],
            "methods": methods, "eval": {"sampling": {"num_samples": 2}}, **extra}
    return from_dict(CompareConfig, data)


def test_diffusion_methods_are_trained_and_reported_with_kl_diversity_and_grids(tmp_path, tiny_start):
    cfg = _config(tmp_path, [{"name": "raft", "method": "diffusion_raft"}, {"name": "ddpo", "method": "ddpo"}])
    report = run_compare(cfg)
    table = (report / "table.md").read_text()
    assert table.splitlines()[0] == ("| model | seeds | classifier reward | gain | ink | KL to start (nats/image) "
                                     "| diversity | train time (s) |")
    rows = json.loads((report / "results.json").read_text())["rows"]
    assert list(rows) == ["start", "raft", "ddpo"]
    assert rows["start"]["kl"] == pytest.approx(0.0, abs=1e-3)  # the start model against itself
    assert all(rows[m]["diversity"] > 0 and rows[m]["kl"] == rows[m]["kl"] for m in rows)
    assert {p.name for p in report.glob("grid_*.png")} == {"grid_start.png", "grid_raft.png", "grid_ddpo.png"}
    assert (report / "report.html").read_text().count('<img src="data:image/png;base64,') == 3
    assert (tmp_path / "cmp/runs/raft/final").is_dir() and (tmp_path / "cmp/runs/ddpo/eval.json").is_file()
    # a second run reuses the trained models (train time 0) and gives the same numbers
    again = json.loads((run_compare(cfg) / "results.json").read_text())["rows"]
    assert again["ddpo"]["seconds"] == 0.0 and again["ddpo"]["classifier"] == pytest.approx(rows["ddpo"]["classifier"])


def test_diffusion_and_language_methods_cannot_share_a_compare(tmp_path, tiny_start):
    cfg = _config(tmp_path, [{"name": "ddpo", "method": "ddpo"}, {"name": "sft", "method": "sft"}])
    with pytest.raises(ConfigError, match="diffusion and language methods"):
        run_compare(cfg)


def test_one_image_per_digit_is_refused_before_training(tmp_path, tiny_start):
    cfg = _config(tmp_path, [{"name": "ddpo", "method": "ddpo"}])
    cfg.eval.sampling.num_samples = 1
    with pytest.raises(ConfigError, match="eval.sampling.num_samples: 1"):
        run_compare(cfg)
    assert not (tmp_path / "cmp/runs/ddpo").exists()


