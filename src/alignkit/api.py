"""The Python API: train, evaluate, compare, generate, score and soup from objects or paths.

Each function builds the same typed config the command line builds from YAML, then runs the
same code; the command line is a thin layer over these functions (it loads the YAML file into the
typed config, passes it as ``config=``, and prints what comes back). Objects (a model, a reference model, a tokenizer, a ``datasets.Dataset`` or a
list of dicts) reach the loaders without being written out: they are held in memory for the
run and stand in the config under a name that says what they are
(:mod:`alignkit.in_memory`); the saved ``config.yaml`` keeps those names.

A TRL DPO script::

    trainer = DPOTrainer(model=model, args=DPOConfig(output_dir="out", beta=0.1, max_steps=100),
                         train_dataset=ds, processing_class=tokenizer, peft_config=LoraConfig())
    trainer.train()

is, in alignkit::

    run = alignkit.train("dpo", model=model, tokenizer=tokenizer, train_data=ds, output_dir="out",
                         loss={"beta": 0.1}, train={"max_steps": 100}, lora=True)

Settings are the config's sections as keyword dicts (``loss=``, ``train=``, ``data=``,
``reference=``, ``engine=``, ``sampling=``, ``online=``, ``ppo=``, ``reward_model=``,
``rewards=``), on top of ``config`` (a YAML path, a dict, or a :class:`~alignkit.config.Config`)
and before ``overrides`` (``["train.max_steps=3"]``, as on the command line).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit import in_memory
from alignkit.errors import ConfigError


@dataclass
class Run:
    """A finished training run: its folder, its resolved config, and its logged metrics."""

    output_dir: Path
    config: Any  # the resolved alignkit.config.Config
    _held: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final(self) -> Path:
        """The saved model: a whole model, or a LoRA adapter (``PeftModel.from_pretrained(base, final)``)."""
        return self.output_dir / "final"

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` (one per logged step, then the final evaluation)."""
        path = self.output_dir / "metrics.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []

    @property
    def model(self):
        """The trained model, loaded from ``final/`` (a LoRA run's: the adapter on the base it records).
        A model object built in memory records no base to load; then the object given to :func:`train`
        is returned, trained in place (with LoRA, peft's adapter layers were added to it)."""
        from alignkit.models.loading import is_adapter_folder, load_causal_lm

        adapter = self.final / "adapter_config.json"
        if is_adapter_folder(str(self.final)) and "model" in self._held:
            if not json.loads(adapter.read_text()).get("base_model_name_or_path"):
                return self._held["model"]
        return load_causal_lm(_model_section(self.config, str(self.final)))[0]

    @property
    def tokenizer(self):
        from alignkit.models.loading import load_tokenizer

        return load_tokenizer(str(self.final))


def _model_section(cfg, path: str):
    from dataclasses import replace

    return replace(cfg.model, name_or_path=path, tokenizer="")


# ---------------------------------------------------------------- building configs


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested update: a dict value updates the section, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def _base(config: Any) -> dict[str, Any]:
    """``config`` (None, a YAML path, a dict, or a config dataclass) as a raw dict."""
    import dataclasses

    import yaml

    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)  # a deep copy
    if isinstance(config, dict):
        return copy.deepcopy(config)
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded


def _place(obj: Any, role: str, held: dict[str, str]) -> str:
    """A path stays a path; an object is held in memory under a name."""
    if isinstance(obj, (str, Path)):
        return str(obj)
    name = in_memory.hold(obj, role)
    held[role] = name
    return name


def _data(obj: Any, role: str, held: dict[str, str]) -> str:
    if isinstance(obj, (str, Path)):
        return str(obj)
    if isinstance(obj, dict) or not isinstance(obj, Iterable):
        raise ConfigError(f"{role}: expected a path, a datasets.Dataset or a list of dicts, got {type(obj).__name__}")
    return _place(obj, role, held)


def _build(cls, data: dict[str, Any], overrides: Sequence[str]):
    from alignkit.config import apply_overrides, from_dict

    return from_dict(cls, apply_overrides(data, list(overrides)))


def train_config(method: str | None = None, *, model: Any = None, ref_model: Any = None, tokenizer: Any = None,
                 train_data: Any = None, eval_data: Any = None, output_dir: str | Path | None = None,
                 lora: bool | dict | None = None, config: Any = None, overrides: Sequence[str] = (),
                 held: dict[str, str] | None = None, **sections: Any):
    """The typed :class:`~alignkit.config.Config` that :func:`train` runs. Objects are held in memory
    (``held`` maps their roles to their names) until ``alignkit.in_memory.release(*held.values())``."""
    from alignkit.config import Config

    held = {} if held is None else held
    data = _base(config)
    if method is not None:
        data["method"] = method
    _merge(data, sections)
    if isinstance(model, dict):
        _merge(data.setdefault("model", {}), model)
    elif model is not None:
        data.setdefault("model", {})["name_or_path"] = _place(model, "model", held)
    if tokenizer is not None:
        data.setdefault("model", {})["tokenizer"] = _place(tokenizer, "tokenizer", held)
    if lora is not None:
        data.setdefault("model", {}).setdefault("lora", {}).update(
            {"enabled": True, **lora} if isinstance(lora, dict) else {"enabled": lora})
    if ref_model is not None:
        data.setdefault("reference", {})["path"] = _place(ref_model, "ref_model", held)
    if train_data is not None:
        data.setdefault("data", {})["train"] = _data(train_data, "train_data", held)
    if eval_data is not None:
        data.setdefault("data", {})["eval"] = _data(eval_data, "eval_data", held)
    if output_dir is not None:
        data.setdefault("train", {})["output_dir"] = str(output_dir)
    return _build(Config, data, overrides)


# ---------------------------------------------------------------- the verbs


def train(method: str | None = None, *, model: Any = None, ref_model: Any = None, tokenizer: Any = None,
          train_data: Any = None, eval_data: Any = None, output_dir: str | Path | None = None,
          lora: bool | dict | None = None, config: Any = None, overrides: Sequence[str] = (), **sections: Any) -> Run:
    """Train ``method`` (any name ``alignkit methods`` lists) and return the :class:`Run`.

    Args:
        model: a model object, a path, a Hub id or a built-in tiny model (or the ``model`` section
            as a dict). An object is trained in place unless ``lora`` wraps it in an adapter.
        ref_model: the reference (DPO family, PPO): an object or a path; default: the starting model.
        tokenizer: an object or a path; default: the model's own.
        train_data, eval_data: a ``datasets.Dataset`` (or ``DatasetDict``, by ``data.split``), a list
            of dicts, or a path; any layout ``alignkit`` reads (TRL's included).
        lora: True, or the ``model.lora`` section as a dict (``{"r": 16}``; given, it means enabled).
        config, overrides, **sections: see the module doc.
    """
    from alignkit.train.accelerator import check_tracker
    from alignkit.train.run import run_train

    held: dict[str, str] = {}
    try:
        cfg = train_config(method, model=model, ref_model=ref_model, tokenizer=tokenizer, train_data=train_data,
                           eval_data=eval_data, output_dir=output_dir, lora=lora, config=config,
                           overrides=overrides, held=held, **sections)
        check_tracker(cfg.train.tracker)
        out = run_train(cfg)
        objects = {role: in_memory.lookup(name) for role, name in held.items()}
        return Run(Path(out), cfg, objects)
    finally:
        in_memory.release(*held.values())


def evaluate(model: Any = None, *, prompts: Any = None, reference: Any = None, tokenizer: Any = None,
             config: Any = None, overrides: Sequence[str] = (), **settings: Any) -> dict:
    """Evaluate a model (object or path; default: the config's ``model``) as ``alignkit eval`` does; returns
    the report (``eval.json``).

    ``prompts``, ``reference_responses`` and ``preference_data`` may be Datasets or lists of dicts;
    ``settings`` are :class:`~alignkit.eval.runner.EvalConfig` fields (``rewards=[{"kind": "vader"}]``,
    ``sampling={"num_samples": 4}``, ``output_dir=...``)."""
    from alignkit.eval.runner import EvalConfig, evaluate_model

    held: dict[str, str] = {}
    try:
        data = _merge(_base(config), settings)
        if model is not None:
            data["model"] = _place(model, "model", held)
        for key, value in (("prompts", prompts), ("reference", reference), ("tokenizer", tokenizer)):
            if value is not None:
                data[key] = _data(value, key, held) if key == "prompts" else _place(value, key, held)
        for key in ("reference_responses", "preference_data"):
            if key in data and not isinstance(data[key], str):
                data[key] = _data(data[key], key, held)
        return evaluate_model(_build(EvalConfig, data, overrides))
    finally:
        in_memory.release(*held.values())


def compare(config: Any = None, *, overrides: Sequence[str] = (), **settings: Any) -> Path:
    """Train several methods under one budget and report, as ``alignkit compare`` does; returns the
    report folder (``table.md``, ``report.html``)."""
    from alignkit.eval.compare import CompareConfig, run_compare

    return run_compare(_build(CompareConfig, _merge(_base(config), settings), overrides))


class Samples(list):
    """The rows :func:`generate` returns (a list of ``{prompt, responses[, scores]}``), with the file they
    were written to (``path``) and the generation metrics (``metrics``: ``gen/tokens_per_s``, ...)."""

    def __init__(self, rows: list[dict], path: Path, metrics: dict[str, float]):
        super().__init__(rows)
        self.path = path
        self.metrics = metrics


def generate(model: Any = None, prompts: Any = None, *, tokenizer: Any = None, output: str | Path = "",
             config: Any = None, overrides: Sequence[str] = (), **sections: Any) -> Samples:
    """Sample ``sampling.num_samples`` responses per prompt (scored when ``rewards`` is given), as
    ``alignkit generate`` does; returns the ``{prompt, responses[, scores]}`` rows (also written to
    ``output``, default ``train.output_dir/samples.jsonl``). ``model`` and ``prompts`` default to the
    config's ``model`` and ``data.train``; ``prompts``: a path, a Dataset, a list of dicts, or a list of
    prompt strings."""
    from alignkit.engine.cli import generate_file

    if isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts):
        prompts = [{"prompt": p} for p in prompts]
    held: dict[str, str] = {}
    try:
        cfg = train_config(model=model, tokenizer=tokenizer, train_data=prompts, config=config, overrides=overrides,
                           held=held, **sections)
        path, rows, metrics = generate_file(cfg, output)
        return Samples(rows, path, metrics)
    finally:
        in_memory.release(*held.values())


def score(reward: Any, prompts: Sequence[str] | None = None, responses: Sequence[str] | None = None, *,
          data: str | Path | None = None, output: str | Path = "") -> Any:
    """One score per response from a reward spec (``{"kind": "vader"}``, a list of specs for a mix, a YAML
    file holding either or a config with ``rewards:``) or a built :class:`~alignkit.rewards.base.Reward`.

    With ``prompts`` and ``responses``: returns the scores. With ``data`` (a file of prompt + responses or
    pairwise rows), as ``alignkit score`` does: writes it back with a score per response to ``output``
    (default: DATA with ``.scored.jsonl``) and returns that path."""
    from alignkit.rewards.base import Reward, build_reward
    from alignkit.rewards.score_file import score_file

    built = reward if isinstance(reward, Reward) else build_reward(_reward_spec(reward))
    if data is not None:
        out = Path(output or str(data).removesuffix(".gz").rsplit(".", 1)[0] + ".scored.jsonl")
        score_file(built, str(data), out)
        return out
    if prompts is None or responses is None:
        raise ConfigError("score: give prompts and responses, or a data file (data=...)")
    if len(prompts) != len(responses):
        raise ConfigError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    return [float(x) for x in built.score(list(prompts), list(responses))]


def _reward_spec(reward: Any) -> Any:
    """A spec, a list of specs, or a YAML file holding one (or a config's ``rewards:``) as a spec."""
    import yaml

    if not isinstance(reward, (str, Path)):
        return reward
    path = Path(reward)
    if not path.is_file():
        raise ConfigError(f"{path}: reward config not found")
    spec = yaml.safe_load(path.read_text())
    if isinstance(spec, dict) and "rewards" in spec:
        spec = spec["rewards"]
    if not spec:
        raise ConfigError(f"{path}: no reward spec; write e.g. `kind: vader`")
    return spec


def soup(config: Any = None, *, overrides: Sequence[str] = (), config_path: str = "the config",
         **settings: Any) -> Path:
    """Rewarded soups as ``alignkit soup`` does: train the models when the config has ``train.start``, evaluate
    every interpolation, and report (``soup.md``, ``report.html``); returns the output folder.
    ``config_path`` names the config in the message about models that do not exist."""
    from alignkit.eval.soup import SoupConfig, run_soup

    return run_soup(_build(SoupConfig, _merge(_base(config), settings), overrides), config_path)
