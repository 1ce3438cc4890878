"""``alignkit compare``: train several methods from one start under one budget, evaluate, report.

Every method is an entry ``{name, method, overrides}``: the ``base`` train config with
``method`` set and the dotted ``overrides`` applied (``{loss.beta: 0.1, data.train: ...}``),
then the shared ``seed`` and ``budget``. Each trains with :func:`~alignkit.train.run.run_train`
into ``OUTPUT_DIR/runs/NAME`` and is evaluated there by :func:`~alignkit.eval.runner.evaluate_model`
(``eval.json``, ``samples.jsonl``), against the starting model as the KL reference. The
report folder ``OUTPUT_DIR/report`` gets ``table.md``, ``table.csv``, the plots and
``report.html`` (see :mod:`alignkit.eval.report`).

Resume: a method whose folder has ``final/`` and an ``eval.json`` made with the same eval
settings is not run again; with ``final/`` alone it is only evaluated. A method whose
resolved train config differs from the ``config.yaml`` of its folder is trained again.
Failures: an exception while training or evaluating one method marks its row ``failed:
<error>`` (the traceback goes to ``runs/NAME/error.txt``) and the others go on. Config
errors (unknown keys, wrong types) stop the command before anything is trained.

Budget: ``budget.max_steps`` is the number of optimizer steps of every method;
``budget.samples`` (training prompts seen) sets it to ``ceil(samples / prompts per step)``,
where a step takes ``train.batch_size x train.grad_accum`` prompts, times
``ppo.num_minibatches`` for the on-policy methods (ppo, rloo, grpo). The staged sampling
methods (raft, rso, online, iterative_dpo) fine-tune ``train.max_steps`` steps per stage, so
they get ``ceil(budget / online.stages)`` steps per stage. Each trainer declares this shape
when it registers (:class:`alignkit.train.run.StepShape`). Sampling budgets (samples per
prompt, stages, prompts per stage) stay the methods' own settings.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import re
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignkit.config import Config, from_dict, to_dict
from alignkit.config.rewards import RewardSpec
from alignkit.errors import ConfigError
from alignkit.eval.runner import EvalConfig, json_safe
from alignkit.train.methods import method_spec

log = logging.getLogger("alignkit")



@dataclass
class MethodEntry:
    name: str = ""  # row label and run folder name (letters, digits, '.', '_', '-')
    method: str = (
        ""  # a training method: any name `alignkit methods` lists (sft, dpo, rrhf, pro, raft, ppo, ...)
    )
    overrides: dict[str, Any] = field(
        default_factory=dict
    )  # dotted train-config keys over `base`: {loss.beta: 0.1}


@dataclass
class BudgetConfig:
    max_steps: int = 0  # optimizer steps (PPO/RAFT: iterations) of every method (0: each method's own)
    samples: int = 0  # training prompts seen by every method; sets max_steps (0: off)


@dataclass
class CompareConfig:
    base: dict[str, Any] = field(
        default_factory=dict
    )  # a train config (as for `alignkit train`) shared by all
    rewards: list[RewardSpec] = field(
        default_factory=list
    )  # eval rewards; also training rewards when base has none
    methods: list[MethodEntry] = field(default_factory=list)  # the methods to train and compare
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    seed: int = 0  # train.seed and sampling.seed of every method, and the evaluation's sampling seed
    eval: EvalConfig = field(
        default_factory=EvalConfig
    )  # evaluation of every model (model, output_dir set per run;
    # reference defaults to the starting model, rewards to `rewards`)
    include_start: bool = True  # evaluate the starting model as a row
    include_dataset: bool = (
        True  # rows for the chosen / rejected responses of eval.prompts, when it has pairs
    )
    samples_shown: int = 8  # prompts shown side by side in report.html
    output_dir: str = "runs/compare"  # runs/NAME per method, report/ for the tables, plots and page


# ---------------------------------------------------------------- configs


def set_dotted(data: dict, key: str, value: Any) -> None:
    """``data[a][b] = value`` for ``key = "a.b"``; a mapping value is merged into an existing section."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part} is not a section")
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        for sub, v in value.items():
            set_dotted(node[last], str(sub), v)
    else:
        node[last] = copy.deepcopy(value)


def prompts_per_step(cfg: Config) -> int:
    return cfg.train.batch_size * cfg.train.grad_accum * method_spec(cfg.method).step_shape.batches_per_step(cfg)


def method_config(cfg: CompareConfig, entry: MethodEntry) -> Config:
    """The typed train config of one method: base + method + overrides + seed, budget and run folder."""
    data = copy.deepcopy(cfg.base)
    data["method"] = entry.method
    for key, value in entry.overrides.items():
        set_dotted(data, str(key), value)
    if cfg.rewards and not data.get("rewards"):
        data["rewards"] = [asdict(r) for r in cfg.rewards]
    set_dotted(data, "train.seed", cfg.seed)
    set_dotted(data, "sampling.seed", cfg.seed)
    set_dotted(data, "train.output_dir", str(Path(cfg.output_dir) / "runs" / entry.name))
    train_cfg = from_dict(Config, data)
    steps = cfg.budget.max_steps
    if cfg.budget.samples > 0:
        steps = math.ceil(cfg.budget.samples / prompts_per_step(train_cfg))
    if steps > 0:
        train_cfg.train.max_steps = math.ceil(steps / method_spec(train_cfg.method).step_shape.stages(train_cfg))
    return train_cfg


def check_compare(cfg: CompareConfig) -> list[Config]:
    """Every method's train config, built now so that config errors stop the run before any training."""
    if not cfg.methods:
        raise ConfigError("methods: no methods to compare; give a list of {name, method, overrides}")
    if not cfg.eval.prompts:
        raise ConfigError("eval.prompts: no prompts to evaluate on")
    seen: set[str] = set()
    out = []
    for i, entry in enumerate(cfg.methods):
        if not entry.method:
            raise ConfigError(f"methods[{i}].method: required (e.g. dpo)")
        entry.name = entry.name or entry.method
        if not re.fullmatch(r"[A-Za-z0-9._-]+", entry.name) or entry.name in seen or entry.name == "start":
            raise ConfigError(
                f"methods[{i}].name: {entry.name!r} must be unique, not 'start', and use only "
                "letters, digits, '.', '_' and '-'"
            )
        seen.add(entry.name)
        try:
            train_cfg = method_config(cfg, entry)
            method_spec(train_cfg.method).check(train_cfg)
            out.append(train_cfg)
        except ConfigError as err:
            raise ConfigError(f"methods[{i}] ({entry.name}): {err}") from None
    return out


def eval_config(cfg: CompareConfig, model: str, out_dir: Path, implicit: str) -> EvalConfig:
    start = cfg.base.get("model", {}).get("name_or_path", "tiny-llama")
    ev = cfg.eval
    return replace(
        ev,
        model=model,
        reference=ev.reference or start,
        rewards=ev.rewards or list(cfg.rewards),
        sampling=replace(ev.sampling, seed=cfg.seed),
        output_dir=str(out_dir),
        implicit_reward=implicit if ev.implicit_reward == "auto" else ev.implicit_reward,
    )


def implicit_reward_of(method: str) -> str:
    """The policy's implicit reward for preference accuracy: its spec's (the log ratio if its loss uses a reference)."""
    return method_spec(method).implicit_reward


# ---------------------------------------------------------------- running


def _same(saved: Any, current: Any) -> bool:
    return json.loads(json.dumps(json_safe(saved))) == json.loads(json.dumps(json_safe(current)))


def _saved_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _finished_eval(run_dir: Path, ev: EvalConfig) -> dict | None:
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if _same(result.get("config"), asdict(ev)) else None


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_method(entry: MethodEntry, train_cfg: Config, ev: EvalConfig, reference) -> tuple[dict, str]:
    """Train (unless finished) and evaluate (unless evaluated) one method; returns (eval result, status)."""
    from alignkit.eval.runner import evaluate_model
    from alignkit.train.run import run_train

    run_dir = Path(train_cfg.train.output_dir)
    final = run_dir / "final"
    if final.is_dir() and not _same(_saved_yaml(run_dir / "config.yaml"), to_dict(train_cfg)):
        log.info("%s: the config changed since the last run; training again", entry.name)
        (run_dir / "eval.json").unlink(missing_ok=True)
    elif final.is_dir():
        done = _finished_eval(run_dir, ev)
        if done is not None:
            log.info("%s: finished earlier; reusing %s", entry.name, run_dir / "eval.json")
            return done, "ok (cached)"
        log.info("%s: trained earlier; evaluating %s", entry.name, final)
        return evaluate_model(ev, reference=reference), "ok (eval only)"
    log.info("%s: training %s", entry.name, train_cfg.method)
    (run_dir / "eval.json").unlink(missing_ok=True)
    run_train(train_cfg)
    _free()
    return evaluate_model(ev, reference=reference), "ok"


def _guarded(label: str, run_dir: Path, fn, *args) -> tuple[dict | None, str]:
    """``fn(*args)`` with any exception turned into a ``failed: ...`` status (traceback kept in error.txt)."""
    try:
        out = fn(*args)
        (run_dir / "error.txt").unlink(missing_ok=True)  # an earlier failure's traceback no longer applies
        return out
    except Exception as err:  # noqa: BLE001  (one failing method must not lose the others)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        log.error(
            "%s failed: %s: %s (traceback in %s)", label, type(err).__name__, first, run_dir / "error.txt"
        )
        return None, f"failed: {type(err).__name__}: {first}"
    finally:
        _free()


def run_compare(cfg: CompareConfig) -> Path:
    """Train and evaluate every method, then write the report; returns the report folder."""
    from alignkit.eval.report import ReportRow, write_compare_report
    from alignkit.eval.runner import evaluate_model, load_model, read_samples

    train_cfgs = check_compare(cfg)
    out = Path(cfg.output_dir)
    runs = out / "runs"
    start_ev = eval_config(cfg, "", runs / "start", "logp")
    start_ev.model = start_ev.reference
    reference, tokenizer = load_model(start_ev.reference, start_ev)
    rows: list[ReportRow] = []
    if cfg.include_start:

        def start_row():
            done = _finished_eval(runs / "start", start_ev)
            if done is not None:
                return done, "ok (cached)"
            return evaluate_model(start_ev, reference, tokenizer, reference), "ok"

        result, status = _guarded("start", runs / "start", start_row)
        samples = read_samples(runs / "start/samples.jsonl") if result else []
        rows.append(ReportRow(f"start ({start_ev.reference})", result, status, samples))
    if cfg.include_dataset:
        rows += dataset_rows(start_ev)
    for entry, train_cfg in zip(cfg.methods, train_cfgs):
        run_dir = Path(train_cfg.train.output_dir)
        ev = eval_config(cfg, str(run_dir / "final"), run_dir, implicit_reward_of(entry.method))
        result, status = _guarded(entry.name, run_dir, run_method, entry, train_cfg, ev, reference)
        samples = read_samples(run_dir / "samples.jsonl") if result else []
        rows.append(ReportRow(entry.name, result, status, samples, read_metrics(run_dir / "metrics.jsonl")))
    return write_compare_report(
        out / "report", rows, cfg.samples_shown, title=f"alignkit compare: {out.name}"
    )


def dataset_rows(ev: EvalConfig) -> list:
    """Rows for the chosen and rejected responses of ``eval.prompts`` (none when it has no pairs)."""
    from alignkit.eval.report import ReportRow
    from alignkit.eval.runner import build_rewards, evaluate_texts, load_baseline, load_rows
    from alignkit.rewards.base import as_text

    examples = load_rows(ev.prompts, ev.max_prompts)
    if not examples or not all(ex.scores is not None and len(ex.responses) >= 2 for ex in examples):
        return []
    prompts = [as_text(ex.prompt) for ex in examples]
    rewards = build_rewards(ev.rewards)
    baseline = load_baseline(ev, examples, prompts) if ev.baseline else None
    rows = []
    for label, pick in (("chosen", 0), ("rejected", -1)):
        texts = [[as_text(ex.responses[ex.ranked()[pick]])] for ex in examples]
        result, scores = evaluate_texts(ev, prompts, texts, rewards, baseline)
        samples = [
            {"prompt": p, "responses": t, "rewards": {n: s[i].tolist() for n, s in scores.items()}}
            for i, (p, t) in enumerate(zip(prompts, texts))
        ]
        rows.append(ReportRow(f"dataset {label}", json_safe(result), "ok", samples))
    return rows


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (empty when there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
