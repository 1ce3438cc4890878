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

Sweeps and seeds: an entry with ``knob`` (a dotted train-config key: ``loss.beta``,
``ppo.kl_coef``, ``online.stages``, ``train.learning_rate``) and ``values`` runs once per value,
and every setting runs with ``seeds`` seeds (``seed``, ``seed + 1``, ...), each in its own
folder ``runs/NAME-<knob><value>-s<seed>`` (the knob's last part; no ``-s0``, so that raising
``seeds`` of a finished sweep reuses its seed-0 runs). Rows are grouped by entry into a frontier and the matched-KL table (see
:mod:`alignkit.eval.frontier`) at ``kl_budget`` (0: the largest KL every entry reaches).

Diffusion methods (``method: ddpo`` ...) are compared by :mod:`alignkit.diffusion.compare`: rewards,
KL to the start model, diversity and a sample grid per method.

Budget: ``budget.max_steps`` is the number of optimizer steps of every method;
``budget.samples`` (training prompts seen) sets it to ``ceil(samples / prompts per step)``,
where a step takes ``train.batch_size x train.grad_accum`` prompts, times
``ppo.num_minibatches`` for the on-policy methods (ppo, rloo, grpo). The staged sampling
methods (raft, rso, online, iterative_dpo) fine-tune ``train.max_steps`` steps per stage, so
they get ``ceil(budget / online.stages)`` steps per stage. Each method's spec declares this shape
(:class:`alignkit.train.methods.StepShape`). Sampling budgets (samples per
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
    knob: str = ""  # the dotted key swept for the frontier: loss.beta, ppo.kl_coef, online.stages, ...
    values: list[Any] = field(default_factory=list)  # its values, one run (per seed) each; empty: no sweep


@dataclass
class RunSpec:
    """One training run of a sweep: an entry at one knob value and one seed."""

    entry: MethodEntry
    name: str  # run folder and row label
    setting: str  # "beta=0.1" (empty without a sweep)
    seed: int
    value: Any = None


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
    seeds: int = 1  # runs per setting, with seeds seed, seed + 1, ... (intervals are over prompts and seeds)
    kl_budget: float = 0.0  # KL of the matched-KL table (0: the largest KL every method reaches)
    bootstrap: int = 1000  # bootstrap replicates of the matched-KL intervals
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


def expand_runs(cfg: CompareConfig, entry: MethodEntry) -> list[RunSpec]:
    """The runs of one entry: one per knob value (or one without a sweep) and seed."""
    leaf = entry.knob.rsplit(".", 1)[-1]
    runs = []
    for value in entry.values or [None]:
        for seed in range(cfg.seed, cfg.seed + max(cfg.seeds, 1)):
            name = entry.name + (f"-{leaf}{value}" if entry.values else "") + (f"-s{seed}" if seed else "")
            setting = f"{leaf}={value}" if entry.values else ""
            runs.append(RunSpec(entry, name, setting, seed, value))
    return runs


def method_config(cfg: CompareConfig, entry: MethodEntry, run: RunSpec | None = None) -> Config:
    """The typed train config of one run: base + method + overrides (+ knob value) + seed, budget, folder."""
    run = run or RunSpec(entry, entry.name, "", cfg.seed)
    data = copy.deepcopy(cfg.base)
    data["method"] = entry.method
    for key, value in entry.overrides.items():
        set_dotted(data, str(key), value)
    if entry.values:
        set_dotted(data, entry.knob, run.value)
    if cfg.rewards and not data.get("rewards"):
        data["rewards"] = [asdict(r) for r in cfg.rewards]
    set_dotted(data, "train.seed", run.seed)
    set_dotted(data, "sampling.seed", run.seed)
    set_dotted(data, "train.output_dir", str(Path(cfg.output_dir) / "runs" / run.name))
    train_cfg = from_dict(Config, data)
    steps = cfg.budget.max_steps
    if cfg.budget.samples > 0:
        steps = math.ceil(cfg.budget.samples / prompts_per_step(train_cfg))
    if steps > 0:
        train_cfg.train.max_steps = math.ceil(steps / method_spec(train_cfg.method).step_shape.stages(train_cfg))
    return train_cfg


def check_compare(cfg: CompareConfig) -> list[tuple[RunSpec, Config]]:
    """Every run's train config, built now so that config errors stop the run before any training."""
    if not cfg.methods:
        raise ConfigError("methods: no methods to compare; give a list of {name, method, overrides}")
    if cfg.eval.baseline == START_BASELINE and not cfg.include_start:
        raise ConfigError("eval.baseline: 'start' judges every run against the start model's samples; "
                          "set include_start: true")
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
        if bool(entry.knob) != bool(entry.values):
            raise ConfigError(f"methods[{i}] ({entry.name}): give both knob (a dotted key such as loss.beta) "
                              "and values (a list), or neither")
        if cfg.seeds < 1:
            raise ConfigError(f"seeds: {cfg.seeds}; give the number of seeds per setting (>= 1)")
        runs = expand_runs(cfg, entry)
        odd = [r.name for r in runs if not re.fullmatch(r"[A-Za-z0-9._-]+", r.name)]
        if odd:
            raise ConfigError(f"methods[{i}].values: run name {odd[0]!r} would use characters other than "
                              "letters, digits, '.', '_' and '-'; give plain numbers or words")
        try:
            for run in runs:
                train_cfg = method_config(cfg, entry, run)
                method_spec(train_cfg.method).check(train_cfg)
                out.append((run, train_cfg))
        except ConfigError as err:
            raise ConfigError(f"methods[{i}] ({entry.name}): {err}") from None
    if not cfg.eval.prompts and not _diffusion(out):  # a diffusion compare's prompts are the digits
        raise ConfigError("eval.prompts: no prompts to evaluate on")
    return out


START_BASELINE = "start"  # eval.baseline: the start model's samples, runs/start/samples.jsonl


def _diffusion(train_cfgs: list[tuple[RunSpec, Config]]) -> bool:
    from alignkit.diffusion.compare import diffusion_runs

    return diffusion_runs(train_cfgs)


def eval_config(cfg: CompareConfig, model: str, out_dir: Path, implicit: str, seed: int | None = None) -> EvalConfig:
    """A run's eval settings; ``eval.baseline: start`` names the start row's samples, which the start row
    itself (``model`` empty) is not judged against."""
    ev = cfg.eval
    if ev.baseline == START_BASELINE:
        on_start = str(Path(cfg.output_dir) / "runs" / "start" / "samples.jsonl")
        ev = replace(ev, baseline=on_start if model else "", judge=ev.judge if model else None)
    return replace(
        ev,
        model=model,
        reference=start_model(cfg),
        rewards=ev.rewards or list(cfg.rewards),
        sampling=replace(ev.sampling, seed=cfg.seed if seed is None else seed),
        output_dir=str(out_dir),
        implicit_reward=implicit if ev.implicit_reward == "auto" else ev.implicit_reward,
    )


def implicit_reward_of(method: str) -> str:
    """The policy's implicit reward for preference accuracy, from its spec: ``ratio``, ``logp``, or ``mean_logp``
    for the length-normalised losses (SimPO, ORPO, PRO, RRHF), as each loss declares when it registers."""
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


def run_method(run: RunSpec, train_cfg: Config, ev: EvalConfig, reference) -> tuple[dict, str]:
    """Train (unless finished) and evaluate (unless evaluated) one run; returns (eval result, status)."""
    from alignkit.eval.runner import evaluate_model
    from alignkit.train.guard import claim_output_dir
    from alignkit.train.run import method_sections, run_train

    run_dir = Path(train_cfg.train.output_dir)
    final = run_dir / "final"
    sections = method_sections(train_cfg.method)  # config.yaml holds the sections the method reads
    current = {k: v for k, v in to_dict(train_cfg).items() if k in sections}
    if final.is_dir() and not _same(_saved_yaml(run_dir / "config.yaml"), current):
        log.info("%s: the config changed since the last run; training again", run.name)
        (run_dir / "eval.json").unlink(missing_ok=True)
    elif final.is_dir():
        done = _finished_eval(run_dir, ev)
        if done is not None:
            log.info("%s: finished earlier; reusing %s", run.name, run_dir / "eval.json")
            return done, "ok (cached)"
        log.info("%s: trained earlier; evaluating %s", run.name, final)
        return evaluate_model(ev, reference=reference), "ok (eval only)"
    log.info("%s: training %s", run.name, train_cfg.method)
    (run_dir / "eval.json").unlink(missing_ok=True)
    if not train_cfg.train.resume:  # compare owns runs/NAME: training again replaces what an earlier run left
        claim_output_dir(run_dir, resume=False, overwrite=True)
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


def run_order(runs: list[RunSpec]) -> list[int]:
    """Indices of ``runs`` seed-major (stable): a sweep stopped part-way has every setting of every
    method at its first seeds, rather than all seeds of the first methods and nothing of the last."""
    return sorted(range(len(runs)), key=lambda i: runs[i].seed)


def run_compare(cfg: CompareConfig) -> Path:
    """Train and evaluate every method, then write the report; returns the report folder."""
    from alignkit.eval.report import write_compare_report

    train_cfgs = check_compare(cfg)
    if _diffusion(train_cfgs):  # images: their own rewards, KL proxy, diversity and sample grids
        from alignkit.diffusion.compare import run_diffusion_compare

        return run_diffusion_compare(cfg, train_cfgs)
    rows = compare_rows(cfg, train_cfgs)
    out = Path(cfg.output_dir)
    return write_compare_report(
        out / "report", rows, cfg.samples_shown, title=f"alignkit compare: {out.name}",
        start_model=start_model(cfg), kl_budget=cfg.kl_budget or None, bootstrap=cfg.bootstrap,
    )


def start_model(cfg: CompareConfig) -> str:
    """The KL reference of every run: ``eval.reference``, else the base config's starting model."""
    return cfg.eval.reference or cfg.base.get("model", {}).get("name_or_path", "tiny-llama")


def compare_rows(cfg: CompareConfig, train_cfgs: list[tuple[RunSpec, Config]] | None = None) -> list:
    """Train (unless finished earlier) and evaluate the start and every run: the report's rows, in order.

    ``alignkit soup`` trains its models through this too, so both commands share one run cache.
    ``train_cfgs``: :func:`check_compare`'s result when the caller has it."""
    from alignkit.eval.report import ReportRow
    from alignkit.eval.runner import evaluate_model, load_model, read_samples

    train_cfgs = check_compare(cfg) if train_cfgs is None else train_cfgs
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
        rows.append(ReportRow("start", result, status, samples, group="start"))
    if cfg.include_dataset:
        rows += dataset_rows(start_ev)
    outcomes = {}
    for i in run_order([run for run, _ in train_cfgs]):
        run, train_cfg = train_cfgs[i]
        run_dir = Path(train_cfg.train.output_dir)
        ev = eval_config(cfg, str(run_dir / "final"), run_dir, implicit_reward_of(run.entry.method), run.seed)
        outcomes[i] = _guarded(run.name, run_dir, run_method, run, train_cfg, ev, reference)
    for i, (run, train_cfg) in enumerate(train_cfgs):
        run_dir = Path(train_cfg.train.output_dir)
        result, status = outcomes[i]
        samples = read_samples(run_dir / "samples.jsonl") if result else []
        curves = read_metrics(run_dir / "metrics.jsonl", train_cfg.train.max_steps)
        rows.append(ReportRow(run.name, result, status, samples, curves,
                              group=run.entry.name, setting=run.setting, seed=run.seed))
    return rows


def dataset_rows(ev: EvalConfig) -> list:
    """Rows for the chosen and rejected responses of ``eval.prompts`` (none when it has no pairs)."""
    from alignkit.eval.report import ReportRow
    from alignkit.eval.runner import load_baseline, load_prompt_rows
    from alignkit.eval.sample_metrics import build_rewards, evaluate_texts
    from alignkit.rewards.base import as_text

    examples = load_prompt_rows(ev)
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


def read_metrics(path: Path, steps_per_stage: int = 0) -> list[dict]:
    """The records of a run's metrics.jsonl (empty when there is none).

    A staged run (RAFT, RSO, iterative DPO) logs one record per stage; with ``steps_per_stage`` each
    gets the optimizer step its stage starts at, ``stage * steps_per_stage`` (where its samples were
    drawn and rewarded; its loss is the mean over the steps that follow), so that its learning curve
    shares the step axis of the other methods instead of being squeezed into steps 1-3."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for rec in records:
        if steps_per_stage > 0 and isinstance(rec.get("stage"), int) and "step" not in rec:
            rec["step"] = rec["stage"] * steps_per_stage
    return records
