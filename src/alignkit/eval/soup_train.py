"""The trainings behind a rewarded soup, and its MORL baseline (Rame et al. 2023, sec. 3 and Fig. 1).

With a ``train:`` section, ``alignkit soup`` makes its models itself, from one start:

- one fine-tuning per reward ``R_i`` (the soup's ingredients), and
- for the MORL baseline, one fine-tuning per ``mu`` of ``train.morl`` on the weighted mix
  ``(1 - mu) R_1 + mu R_2`` (a :class:`~alignkit.rewards.mix.MixReward`: the two reward specs
  with their weights scaled by ``1 - mu`` and ``mu``); ``mu = 0`` and ``mu = 1`` are the two
  ingredients themselves, so the MORL front is the ingredients plus these runs.

Every run has the same method, base config, budget and seed. They are the ``methods`` of a
:class:`~alignkit.eval.compare.CompareConfig` and run through
:func:`~alignkit.eval.compare.compare_rows`: the run folders ``OUTPUT_DIR/runs/NAME``, the
resume rules (a finished, evaluated run is reused; a changed config trains again) and the
evaluation against the start model are compare's.

``demo:FILE`` anywhere in the config names a file of the default ``alignkit demo``'s cache
(``demo:pretrain/final`` is its pretrained review model, ``demo:prompts.jsonl`` its training
prompts, ``demo:eval_prompts.jsonl`` its held-out prompts); the cache is built when missing.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError, ConfigError
from alignkit.eval.compare import BudgetConfig, CompareConfig, MethodEntry, set_dotted

DEMO_PREFIX = "demo:"


@dataclass
class SoupTrainSection:
    start: str = ""  # the shared start of every training (a model folder, demo:pretrain/final, tiny-llama);
    # empty: no training, `models` names finished runs
    method: str = "ppo"  # the fine-tuning method of every run: any name `alignkit methods` lists
    base: dict[str, Any] = field(default_factory=dict)  # the train config shared by every run (as compare's
    # base; model.name_or_path is `start`, rewards are set per run)
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # the same budget for every run
    seed: int = 0  # train.seed and sampling.seed of every run, and the evaluation's sampling seed
    morl: list[float] = field(default_factory=list)  # mu of the MORL baseline, one training on
    # (1 - mu) R_1 + mu R_2 each, 0 < mu < 1 (empty: no baseline)


# ---------------------------------------------------------------- demo: paths


def uses_demo(data: Any) -> bool:
    """Whether any string in ``data`` (nested dicts and lists) is a ``demo:FILE`` path."""
    if isinstance(data, str):
        return data.startswith(DEMO_PREFIX)
    if isinstance(data, dict):
        return any(uses_demo(v) for v in data.values())
    if isinstance(data, list):
        return any(uses_demo(v) for v in data)
    return False


def resolve_demo_paths(data: Any, folder: Path) -> Any:
    """``data`` with every ``demo:FILE`` string replaced by ``folder/FILE``."""
    if isinstance(data, str) and data.startswith(DEMO_PREFIX):
        return str(folder / data[len(DEMO_PREFIX):])
    if isinstance(data, dict):
        return {k: resolve_demo_paths(v, folder) for k, v in data.items()}
    if isinstance(data, list):
        return [resolve_demo_paths(v, folder) for v in data]
    return data


def with_demo_paths(cfg):
    """The soup config with its ``demo:`` paths resolved (the demo's cache built first when missing)."""
    from alignkit.config import from_dict

    data = asdict(cfg)
    if not uses_demo(data):
        return cfg
    from alignkit.demo.pipeline import default_task_folder

    return from_dict(type(cfg), resolve_demo_paths(data, default_task_folder(progress=cfg.eval.progress)))


# ---------------------------------------------------------------- the runs


def reward_label(spec) -> str:
    """A run-folder-safe label of a reward spec: its name, else its kind."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name or spec.kind) or "reward"


def morl_rewards(rewards: list, mu: float) -> list[dict[str, Any]]:
    """The reward specs of ``(1 - mu) R_1 + mu R_2``: each spec's own weight scaled by its share."""
    first, second = rewards
    return [asdict(replace(first, weight=(1 - mu) * first.weight, name=reward_label(first))),
            asdict(replace(second, weight=mu * second.weight, name=reward_label(second)))]


def morl_name(mu: float) -> str:
    return f"morl-mu{mu:g}"


def check_train(cfg) -> None:
    """Config errors of a soup with a ``train:`` section, before anything is built or trained."""
    from alignkit.train.methods import all_methods
    from alignkit.train.run import method_sections

    t = cfg.train
    if t.method not in all_methods():
        raise ConfigError(f"train.method: {t.method!r} is not a method; `alignkit methods` lists them")
    if "rewards" not in method_sections(t.method):
        learners = ", ".join(m for m in sorted(all_methods()) if "rewards" in method_sections(m))
        raise ConfigError(f"train.method: {t.method} does not learn from a reward, so it cannot fine-tune one "
                          f"model per reward; use one that does ({learners})")
    if cfg.models:
        raise ConfigError("models: give either models (finished runs) or train.start (alignkit soup trains the "
                          "models itself), not both")
    labels = [reward_label(r) for r in cfg.rewards]
    if len(set(labels)) != len(labels) or "start" in labels:
        raise ConfigError(f"rewards: the names {labels} label the runs; give each reward a distinct name "
                          "(not 'start')")
    if t.morl and len(cfg.rewards) != 2:
        raise ConfigError(f"train.morl: the MORL baseline mixes 2 rewards, the config has {len(cfg.rewards)}")
    bad = [mu for mu in t.morl if not 0 < mu < 1]
    if bad:
        raise ConfigError(f"train.morl: {bad[0]} is not strictly between 0 and 1 (mu = 0 and 1 are the soup's "
                          "own two fine-tunings)")
    if len(set(t.morl)) != len(t.morl):
        raise ConfigError(f"train.morl: {t.morl} repeats a value")


def compare_config(cfg) -> CompareConfig:
    """The compare config whose methods are the soup's fine-tunings (one per reward) and the MORL runs."""
    t = cfg.train
    base = copy.deepcopy(t.base)
    set_dotted(base, "model.name_or_path", t.start)
    methods = [MethodEntry(name=reward_label(r), method=t.method, overrides={"rewards": [asdict(r)]})
               for r in cfg.rewards]
    methods += [MethodEntry(name=morl_name(mu), method=t.method, overrides={"rewards": morl_rewards(cfg.rewards, mu)})
                for mu in t.morl]
    return CompareConfig(
        base=base, rewards=list(cfg.rewards), methods=methods, budget=t.budget, seed=t.seed, seeds=1,
        eval=replace(cfg.eval, rewards=list(cfg.rewards)), include_start=True, include_dataset=False,
        output_dir=cfg.output_dir,
    )


@dataclass
class TrainedRuns:
    """The outcome of a soup's trainings: the ingredients (run folders), and report rows of every run."""

    models: list[str]  # one run folder per reward, in reward order
    start: Any  # the start model's ReportRow
    ingredients: list  # ReportRow per reward
    morl: list[tuple[float, Any]]  # (mu, ReportRow), by increasing mu
    steps: dict[str, int]  # optimizer steps (PPO: iterations) of every run, by run name
    reference: str  # the start model: the KL reference of every evaluation


def train_runs(cfg) -> TrainedRuns:
    """Train (unless finished earlier) and evaluate the ingredients and the MORL runs."""
    from alignkit.eval.compare import check_compare, compare_rows, start_model
    from alignkit.train.methods import method_spec

    ccfg = compare_config(cfg)
    planned = check_compare(ccfg)
    rows = {row.label: row for row in compare_rows(ccfg)}
    failed = [row for row in rows.values() if not row.status.startswith("ok")]
    if failed:
        row = failed[0]
        raise AlignkitError(f"soup: run {row.label} {row.status} (traceback in "
                            f"{Path(cfg.output_dir) / 'runs' / row.label / 'error.txt'}); fix it and run again: "
                            "finished runs are reused")
    steps = {run.name: tc.train.max_steps * method_spec(tc.method).step_shape.stages(tc) for run, tc in planned}
    labels = [reward_label(r) for r in cfg.rewards]
    return TrainedRuns(
        models=[str(Path(cfg.output_dir) / "runs" / name) for name in labels],
        start=rows["start"],
        ingredients=[rows[name] for name in labels],
        morl=sorted((mu, rows[morl_name(mu)]) for mu in cfg.train.morl),
        steps=steps,
        reference=start_model(ccfg),
    )


# ---------------------------------------------------------------- runs that are not there


def missing_models(models: list[str]) -> list[str]:
    """The models that are neither a local path, a built-in tiny model, nor in the local Hub cache."""
    from alignkit.models.loading import TINY_MODELS

    missing = []
    for name in models:
        if Path(name).exists() or name in TINY_MODELS or _in_hub_cache(name):
            continue
        missing.append(name)
    return missing


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001  (not a valid repo id: not cached)
        return False


def missing_message(missing: list[str], config_path: str = "the config") -> str:
    runs = ", ".join(missing)
    return (f"soup: the models {runs} do not exist; a soup interpolates finished runs of one start: give "
            f"{config_path} a `train:` section so that alignkit soup trains them itself, cached and resumable "
            f"(as configs/soup_tiny.yaml does), or train them first, one per reward from the same start "
            f"(`alignkit train YOUR_CONFIG train.output_dir={missing[0]}`, ...)")
