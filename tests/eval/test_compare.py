"""``alignkit compare``: per-method configs (overrides, seed, budget), failures kept in the table,
resume without re-training, and the report from the CLI. The full list of methods (RAFT and PPO
included) is the slow test."""

import json
from pathlib import Path

import pytest
import yaml

from alignkit.cli import main
from alignkit.config import load_config
from alignkit.data.pipeline import resolve_data_path
from alignkit.errors import ConfigError
from alignkit.eval.compare import CompareConfig, MethodEntry, check_compare, method_config, set_dotted

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs/compare_tiny.yaml"

FAST_EVAL = [
    "eval.max_prompts=4",
    "eval.max_rows=8",
    "eval.sampling.num_samples=2",
    "eval.sampling.max_new_tokens=8",
    "eval.best_of_k=2",
    "budget.max_steps=2",
]


def config(overrides: list[str]) -> CompareConfig:
    return load_config(SHIPPED, overrides, cls=CompareConfig)


def test_set_dotted_creates_and_merges_sections():
    data = {"loss": {"beta": 0.1}, "train": {"seed": 1}}
    set_dotted(data, "loss.label_smoothing", 0.2)
    set_dotted(data, "train", {"max_steps": 3})
    set_dotted(data, "a.b.c", [1])
    assert data == {
        "loss": {"beta": 0.1, "label_smoothing": 0.2},
        "train": {"seed": 1, "max_steps": 3},
        "a": {"b": {"c": [1]}},
    }
    with pytest.raises(ConfigError, match="not a section"):
        set_dotted({"loss": 1}, "loss.beta", 0.1)


def test_method_config_applies_overrides_seed_budget_and_folder(tmp_path):
    cfg = config([f"output_dir={tmp_path}", "seed=7", "budget.max_steps=8"])
    dpo = method_config(cfg, MethodEntry("dpo_b", "dpo", {"loss.beta": 0.3, "train": {"batch_size": 2}}))
    assert dpo.method == "dpo" and dpo.loss == {"beta": 0.3} and dpo.train.batch_size == 2
    assert dpo.train.seed == 7 and dpo.sampling.seed == 7 and dpo.train.max_steps == 8
    assert dpo.train.output_dir == str(tmp_path / "runs" / "dpo_b")
    assert dpo.train.learning_rate == 1e-3 and dpo.model.name_or_path == "tiny-llama"  # from base
    assert [r.kind for r in dpo.rewards] == ["vader", "length"]  # the compare rewards, base has none
    # RAFT fine-tunes train.max_steps per stage: 8 steps over 2 stages -> 4 a stage
    raft = method_config(cfg, MethodEntry("raft", "raft", {"online.stages": 2}))
    assert raft.train.max_steps == 4


def test_a_sweep_expands_into_one_run_per_value_and_seed(tmp_path):
    cfg = config([f"output_dir={tmp_path}", "seeds=2", "seed=5"])
    cfg.methods = [MethodEntry("dpo", "dpo", {"loss.beta": 0.3}, knob="loss.beta", values=[0.05, 0.5]),
                   MethodEntry("sft", "sft", {"data.train": "alignkit:tiny_sft.jsonl"})]
    runs = check_compare(cfg)
    assert [r.name for r, _ in runs] == ["dpo-beta0.05-s5", "dpo-beta0.05-s6", "dpo-beta0.5-s5", "dpo-beta0.5-s6",
                                         "sft-s5", "sft-s6"]
    assert [(c.loss["beta"], c.train.seed, c.sampling.seed) for _, c in runs[:4]] == [
        (0.05, 5, 5), (0.05, 6, 6), (0.5, 5, 5), (0.5, 6, 6)]  # the knob wins over the entry's overrides
    assert runs[2][1].train.output_dir == str(tmp_path / "runs/dpo-beta0.5-s5")
    assert runs[2][0].setting == "beta=0.5" and runs[4][0].setting == ""
    cfg.seed = 0
    cfg.methods = [MethodEntry("dpo", "dpo", knob="loss.beta", values=[0.05, 0.5])]
    assert [r.name for r, _ in check_compare(cfg)][:2] == ["dpo-beta0.05", "dpo-beta0.05-s1"]  # seed 0: no suffix
    cfg.methods = [MethodEntry("dpo", "dpo", knob="loss.beta")]
    with pytest.raises(ConfigError, match="knob.*values"):
        check_compare(cfg)
    cfg.methods = [MethodEntry("dpo", "dpo", knob="loss.beta", values=["a b"])]
    with pytest.raises(ConfigError, match="values: run name"):
        check_compare(cfg)


def test_budget_in_samples_by_hand(tmp_path):
    """10 prompts, batch 4 x accum 1 -> ceil(10 / 4) = 3 steps; PPO with 2 minibatches takes
    8 prompts a step -> ceil(10 / 8) = 2."""
    cfg = config([f"output_dir={tmp_path}", "budget.samples=10"])
    assert method_config(cfg, MethodEntry("d", "dpo")).train.max_steps == 3
    ppo = method_config(cfg, MethodEntry("p", "ppo", {"ppo.num_minibatches": 2}))
    assert ppo.train.max_steps == 2


def test_a_new_trainer_declares_its_step_shape_and_compare_budgets_it_without_edits(tmp_path, monkeypatch):
    """A plugin trainer taking 3 batches a step over 2 stages: 24 prompts / (4 x 3) = 2 steps, 1 a stage."""
    from alignkit.train import methods, run

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    run.register_trainer("dpo", run.StepShape(batches_per_step=lambda cfg: 3, stages=lambda cfg: 2))(lambda cfg: None)
    cfg = config([f"output_dir={tmp_path}", "budget.samples=24"])
    assert method_config(cfg, MethodEntry("d", "dpo")).train.max_steps == 1

def test_config_errors_stop_before_training(tmp_path):
    cfg = config([f"output_dir={tmp_path}"])
    cfg.methods = [MethodEntry("a", "dpo"), MethodEntry("b", "dpo", {"train.bogus": 1})]
    with pytest.raises(ConfigError, match=r"methods\[1\] \(b\): train.bogus: unknown key"):
        check_compare(cfg)
    cfg.methods = [MethodEntry("a", "dpo"), MethodEntry("a", "rrhf")]
    with pytest.raises(ConfigError, match="must be unique"):
        check_compare(cfg)
    cfg.methods = [MethodEntry("x y", "dpo")]
    with pytest.raises(ConfigError, match="letters, digits"):
        check_compare(cfg)


def test_shipped_compare_config_names_every_method():
    cfg = config([])
    methods = [m.method for m in cfg.methods]
    for name in ("sft", "dpo", "rrhf", "pro", "listwise_dpo", "raft", "ppo"):
        assert name in methods
    train_cfgs = [c for _, c in check_compare(cfg)]
    assert len(train_cfgs) == len(methods)
    for path in [c.data.train for c in train_cfgs] + [cfg.eval.prompts, cfg.eval.preference_data]:
        assert Path(resolve_data_path(path)).is_file(), path


def test_compare_end_to_end_with_a_failure_and_resume(tmp_path, capsys, monkeypatch):
    methods = [
        {"name": "sft", "method": "sft", "overrides": {"data.train": "alignkit:tiny_sft.jsonl"}},
        {"name": "dpo", "method": "dpo"},
        {"name": "rrhf", "method": "rrhf"},
        {"name": "pro", "method": "pro"},
        # DPO on SFT data (no preferences) fails inside training; the others must not be lost
        {"name": "broken", "method": "dpo", "overrides": {"data.train": "alignkit:tiny_sft.jsonl"}},
    ]
    args = ["compare", str(SHIPPED), f"output_dir={tmp_path}", f"methods={json.dumps(methods)}", *FAST_EVAL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = tmp_path / "report"
    for name in (
        "table.md",
        "table.csv",
        "reward_vs_kl.png",
        "reward_vs_perplexity.png",
        "reward_vs_msttr.png",
        "learning_curves.png",
        "best_of_k.png",
        "report.html",
        "matched_kl.md",
    ):
        assert (report / name).is_file(), name
    md = (report / "table.md").read_text()
    assert md in printed
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()[2:]}
    assert list(rows) == [
        "start",
        "dataset chosen",
        "dataset rejected",
        "sft",
        "dpo",
        "rrhf",
        "pro",
        "broken",
    ]
    assert "failed: DataError: " in rows["broken"] and "tiny_sft.jsonl:1: has no preference" in rows["broken"]
    assert "method 'dpo' needs pairwise" in rows["broken"]
    for name in ("sft", "dpo", "rrhf", "pro"):
        assert rows[name].endswith("| ok |"), rows[name]
        run = tmp_path / "runs" / name
        assert (
            (run / "final").is_dir() and (run / "eval.json").is_file() and (run / "samples.jsonl").is_file()
        )
    assert "Traceback" in (tmp_path / "runs/broken/error.txt").read_text()
    dpo = json.loads((tmp_path / "runs/dpo/eval.json").read_text())
    assert dpo["kl"]["mean"] != 0 and dpo["preference_accuracy"]["policy_score"] == "ratio"
    assert (
        json.loads((tmp_path / "runs/rrhf/eval.json").read_text())["preference_accuracy"]["policy_score"]
        == "mean_logp"
    )
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "Failed runs" in page  # KL, PPL, MSTTR, distinct-2, ...
    matched = (report / "matched_kl.md").read_text()
    assert "at matched KL" in matched and all(f"| {m} |" in matched for m in ("sft", "dpo", "rrhf", "pro"))

    # Run again: finished methods are neither trained nor evaluated again; the failed one is retried.
    def no_training(cfg):
        raise RuntimeError(f"training {cfg.method} again")

    monkeypatch.setattr("alignkit.train.run.run_train", no_training)
    evaluated = []
    monkeypatch.setattr("alignkit.eval.runner.evaluate_model", lambda *a, **k: evaluated.append(a) or {})
    assert main(args) == 0
    md = (report / "table.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()[2:]}
    for name in ("start", "sft", "dpo", "rrhf", "pro"):
        assert rows[name].endswith("| ok (cached) |"), rows[name]
    assert "failed: RuntimeError: training dpo again" in rows["broken"]
    assert evaluated == []

    # A changed method is trained again (here: the patched trainer fails, proving it was called).
    changed = [
        dict(m, overrides={**m.get("overrides", {}), "loss.beta": 0.5}) if m["name"] == "dpo" else m
        for m in methods
    ]
    assert main([*args[:3], f"methods={json.dumps(changed)}", *FAST_EVAL]) == 0
    rows = {
        line.split(" | ")[0].strip("| "): line for line in (report / "table.md").read_text().splitlines()[2:]
    }
    assert "failed: RuntimeError: training dpo again" in rows["dpo"]
    assert rows["sft"].endswith("| ok (cached) |")
    saved = yaml.safe_load((tmp_path / "runs/dpo/config.yaml").read_text())
    assert saved["loss"] == {}  # the old run (default beta) is still there, untouched by the failed retry
    assert not (tmp_path / "runs/dpo/eval.json").exists()  # and no longer counts as finished


@pytest.mark.slow
def test_compare_every_method_from_the_cli(tmp_path, capsys):
    """SFT, DPO, RRHF, PRO, listwise DPO, RAFT and PPO from configs/compare_tiny.yaml."""
    assert main(["compare", str(SHIPPED), f"output_dir={tmp_path}"]) == 0
    md = (tmp_path / "report/table.md").read_text()
    body = md.splitlines()[2:]
    assert len(body) == 3 + 7
    assert all(line.endswith("| ok |") for line in body), md
    page = (tmp_path / "report/report.html").read_text()
    for name in ("sft", "dpo_beta0.1", "rrhf", "pro", "listwise_dpo", "raft", "ppo"):
        assert f"<td>{name}</td>" in page


def test_length_normalised_methods_are_evaluated_with_mean_logp():
    """The defect: compare scored SimPO, ORPO and PRO with summed log-probs. It now asks the registry."""
    from alignkit.eval.compare import implicit_reward_of

    assert [implicit_reward_of(m) for m in ("simpo", "orpo", "pro", "rrhf")] == ["mean_logp"] * 4
    assert [implicit_reward_of(m) for m in ("dpo", "listwise_dpo", "cpo", "sft", "raft")] == [
        "ratio", "ratio", "logp", "logp", "logp"
    ]


def test_baseline_start_judges_every_run_but_the_start_against_the_start_samples(tmp_path):
    from alignkit.eval.compare import eval_config

    cfg = config([f"output_dir={tmp_path}", "eval.baseline=start", "eval.judge.kind=vader"])
    run = eval_config(cfg, str(tmp_path / "runs/dpo/final"), tmp_path / "runs/dpo", "ratio")
    assert run.baseline == str(tmp_path / "runs/start/samples.jsonl") and run.judge is not None
    start = eval_config(cfg, "", tmp_path / "runs/start", "logp")
    assert start.baseline == "" and start.judge is None
    cfg.include_start = False
    with pytest.raises(ConfigError, match="include_start"):
        check_compare(cfg)


def test_runs_go_seed_major_so_a_stopped_sweep_has_every_setting_at_seed_0():
    from alignkit.eval.compare import expand_runs, run_order

    cfg = CompareConfig(seeds=2, methods=[MethodEntry("dpo", "dpo", knob="loss.beta", values=[0.1, 1.0]),
                                         MethodEntry("ppo", "ppo", knob="ppo.kl_coef", values=[0.05])])
    runs = [r for entry in cfg.methods for r in expand_runs(cfg, entry)]
    assert [r.name for r in runs] == ["dpo-beta0.1", "dpo-beta0.1-s1", "dpo-beta1.0", "dpo-beta1.0-s1",
                                      "ppo-kl_coef0.05", "ppo-kl_coef0.05-s1"]
    assert [runs[i].name for i in run_order(runs)] == ["dpo-beta0.1", "dpo-beta1.0", "ppo-kl_coef0.05",
                                                       "dpo-beta0.1-s1", "dpo-beta1.0-s1", "ppo-kl_coef0.05-s1"]


def test_staged_runs_plot_each_stage_at_the_step_it_starts_at(tmp_path):
    """3 stages of 8 steps (a 24-step budget): stages 0, 1, 2 start at steps 0, 8, 16; per-step records keep theirs."""
    from alignkit.eval.compare import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"stage": 0, "train/loss": 1.6}, {"stage": 1},
                                                             {"stage": 2}, {"step": 5, "loss": 1.0}]))
    assert [r.get("step") for r in read_metrics(path, 8)] == [0, 8, 16, 5]
    assert [r.get("step") for r in read_metrics(path)] == [None, None, None, 5]  # no budget: stages stay stages
    assert read_metrics(tmp_path / "missing.jsonl", 8) == []
