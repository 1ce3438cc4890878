"""The soup experiment's plumbing on the built-in tiny model (1 training step per run): the soup trains
its models and the MORL runs through compare's run cache, writes both fronts, the LMC check and the cost,
and reuses finished runs; the message naming missing runs; `demo:` paths; config errors."""

import json
from pathlib import Path

import pytest
import torch

from alignkit.cli import main
from alignkit.config import load_config
from alignkit.errors import ConfigError
from alignkit.eval.soup import SoupConfig, check_soup
from alignkit.eval.soup_train import compare_config, morl_rewards, resolve_demo_paths, uses_demo

ROOT = Path(__file__).resolve().parents[2]

TINY = [  # the shipped tiny soup from the untrained tiny Llama (plumbing only), 1 step, 2 prompts
    "train.start=tiny-llama",
    "train.budget.max_steps=1",
    "train.base.train.batch_size=2",
    "train.base.sampling.max_new_tokens=4",
    "train.base.ppo.num_ppo_epochs=1",
    "soup.steps=2",
    "soup.save=",
    "eval.max_prompts=2",
    "eval.sampling.num_samples=2",
    "eval.sampling.max_new_tokens=4",
]


def test_soup_trains_its_runs_and_the_morl_baseline_then_reports(tmp_path, capsys):
    out = tmp_path / "soup"
    argv = ["soup", str(ROOT / "configs/soup_tiny.yaml"), *TINY, f"output_dir={out}", "threads=2"]
    threads = torch.get_num_threads()
    assert main(argv) == 0
    assert torch.get_num_threads() == threads  # `threads` holds for the command only
    printed = capsys.readouterr().out
    assert "LMC held for vader" in printed or "LMC failed for vader" in printed
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["brevity", "morl-mu0.5", "start", "vader"]
    for name in ("vader", "brevity", "morl-mu0.5"):  # compare's run folders: trained and evaluated
        assert (out / "runs" / name / "final").is_dir() and (out / "runs" / name / "eval.json").is_file()
    morl_cfg = (out / "runs/morl-mu0.5/config.yaml").read_text()
    assert "weight: 0.5" in morl_cfg and "weight: -0.025" in morl_cfg  # 0.5 * vader + 0.5 * (-0.05 words)
    summary = json.loads((out / "soup.json").read_text())
    exp = summary["experiment"]
    assert set(exp["lmc"]) == {"vader", "brevity"}
    assert [p["lam"] for p in exp["lmc"]["vader"]["points"]] == [0.0, 0.5, 1.0]
    assert [g["mu"] for g in exp["morl_gap"]] == [0.0, 0.5, 1.0]
    assert exp["cost_steps"] == {"soup": 2, "morl": 3}  # 2 ingredients; MORL: the 2 ingredients + 1 mix
    # the soup at lambda 1 is the vader run itself: same weights, same sampling seed, same samples
    vader_run = json.loads((out / "runs/vader/eval.json").read_text())["rewards"]["vader"]["mean"]
    assert summary["soups"][-1]["lambda"] == [1.0, 0.0]
    assert summary["soups"][-1]["rewards"]["vader"]["mean"] == pytest.approx(vader_run)
    report = (out / "report.md").read_text()
    for heading in ("LMC check: vader", "LMC check: brevity", "Soup front against MORL front",
                    "Cost of each front", "Every point"):
        assert f"## {heading}" in report
    assert (out / "fronts.png").stat().st_size > 10_000 and "data:image/png" in (out / "report.html").read_text()

    stamp = (out / "runs/vader/final/model.safetensors").stat().st_mtime
    assert main(argv) == 0  # finished runs are reused, as in compare
    assert (out / "runs/vader/final/model.safetensors").stat().st_mtime == stamp


def test_missing_runs_are_named_with_how_to_make_them(tmp_path, capsys):
    missing = [str(tmp_path / "runs/ppo_vader"), str(tmp_path / "runs/ppo_brevity")]
    code = main(["soup", str(ROOT / "configs/soup_tiny.yaml"), "train.start=", f"models={json.dumps(missing)}",
                 f"output_dir={tmp_path / 'soup'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert all(m in err for m in missing)
    assert "alignkit train" in err and "`train:` section" in err and "configs/soup_tiny.yaml" in err


def test_demo_paths_resolve_anywhere_in_the_config(tmp_path):
    data = {"train": {"start": "demo:pretrain/final", "base": {"data": {"train": "demo:prompts.jsonl"}}},
            "rewards": [{"kind": "model", "path": "demo:reward_model/final"}], "steps": 3}
    assert uses_demo(data) and not uses_demo({"eval": {"prompts": "alignkit:review_prompts.jsonl"}})
    resolved = resolve_demo_paths(data, tmp_path)
    assert resolved["train"]["base"]["data"]["train"] == str(tmp_path / "prompts.jsonl")
    assert resolved["rewards"][0]["path"] == str(tmp_path / "reward_model/final") and resolved["steps"] == 3


def test_morl_runs_are_compare_methods_on_weighted_mixes():
    cfg = load_config(ROOT / "configs/soup_sentiment.yaml", cls=SoupConfig)
    ccfg = compare_config(cfg)
    assert [m.name for m in ccfg.methods] == ["vader", "brevity", *(f"morl-mu{mu:g}" for mu in cfg.train.morl)]
    assert {m.method for m in ccfg.methods} == {"ppo"} and ccfg.base["model"]["name_or_path"] == cfg.train.start
    mix = morl_rewards(cfg.rewards, 0.3)
    assert [(r["name"], r["weight"]) for r in mix] == [("vader", pytest.approx(0.7)), ("brevity", pytest.approx(-0.015))]
    assert len(cfg.train.morl) >= 5 and cfg.soup.steps == 10  # the grid: >= 5 MORL points, 11 soups


def test_train_section_config_errors():
    def check(*overrides):
        check_soup(load_config(ROOT / "configs/soup_tiny.yaml", list(overrides), cls=SoupConfig))

    check()
    bad = {
        ("models=[a,b]",): "either models",
        ("train.method=dpo",): "does not learn from a reward",
        ("train.method=nope",): "not a method",
        ("train.morl=[0.5,1.0]",): "strictly between 0 and 1",
        ("train.morl=[0.5,0.5]",): "repeats",
        ("rewards=[{kind: vader}, {kind: vader, weight: 2}]",): "distinct name",
        ("rewards=[{kind: vader}]", "train.morl=[]"): "at least 2",
        ("rewards=[{kind: vader}, {kind: length}, {kind: length, name: l2}]",): "mixes 2 rewards",
    }
    for overrides, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            check(*overrides)
