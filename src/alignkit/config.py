"""Typed run configuration: dataclasses loaded from YAML, overridable as ``key.sub=value``.

Every section is a dataclass whose fields carry a one-line comment that doubles as
documentation. Loading is strict: an unknown key, a value of the wrong type, or a
value outside a ``Literal`` is a :class:`ConfigError` naming the key and the
allowed values, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.engine.generation import SamplingConfig
from alignkit.errors import ConfigError
from alignkit.rewards.spec import RewardSpec
from alignkit.train.reward_model_config import RewardModelConfig
from alignkit.train.rollout import PPOConfig
from alignkit.train.selection import OnlineConfig


@dataclass
class LoraConfig:
    enabled: bool = False  # train a LoRA adapter instead of all weights (peft)
    r: int = 8  # adapter rank
    alpha: int = 16  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # peft target modules


@dataclass
class ModelConfig:
    name_or_path: str = "tiny-llama"  # a local path, a Hub id, a .gguf file, tiny-llama / tiny-gpt2, smollm2-135m-instruct
    tokenizer: str = ""  # tokenizer path or id; empty means the model's own
    trust_remote_code: bool = False  # run code shipped with a Hub model (off unless you trust it)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weight dtype when loading
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    train: str = ""  # training data: a file (jsonl/json/parquet, optionally .gz), a saved dataset folder, or a Hub id
    eval: str = ""  # held-out data in the same forms; empty means carve eval_size rows off the training data
    format: str = "auto"  # auto, pairwise, hh_rlhf, ranked, qa_feedback, unpaired, prompt, sft
    split: str = "train"  # split of a dataset folder or Hub dataset
    eval_split: str = "test"  # split used for `eval` when it names a dataset with splits
    eval_size: float = 0.0  # rows held out from `train` when `eval` is empty (a fraction if < 1)
    skip_bad_rows: bool = False  # skip unparseable rows (counted in the log) instead of stopping
    max_rows: int = 0  # use only the first max_rows training rows (0: all)
    max_prompt_length: int = 512  # prompt tokens kept (the end of the prompt is kept)
    max_length: int = 1024  # prompt + response tokens; responses are cut to fit
    chat_strings: bool = False  # render string rows (HH dialogues, prompt/chosen/rejected) with the chat template


@dataclass
class TrainConfig:
    output_dir: str = "runs/alignkit"  # run folder: config, metrics.jsonl, checkpoints, final model
    seed: int = 0  # seeds python, numpy and torch on every process
    learning_rate: float = 1e-5  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # decay after warm-up
    warmup_steps: int = 0  # linear warm-up optimizer steps
    max_steps: int = 0  # optimizer steps; 0 means num_epochs over the data
    num_epochs: float = 1.0  # passes over the training data when max_steps is 0
    batch_size: int = 8  # prompts per device per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # gradient clipping (0 disables)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast through Accelerate
    gradient_checkpointing: bool = False  # trade compute for activation memory
    log_every: int = 1  # optimizer steps between metric lines
    eval_every: int = 0  # optimizer steps between evaluations (0: only at the end)
    save_every: int = 0  # optimizer steps between checkpoints (0: only the final model)
    keep_checkpoints: int = 2  # checkpoints kept on disk (oldest removed)
    resume: bool = False  # continue from the last checkpoint in output_dir
    tracker: Literal["none", "tensorboard", "wandb"] = "none"  # extra metric sink through Accelerate
    progress: bool = True  # show a progress bar


@dataclass
class ReferenceConfig:
    mode: Literal["auto", "copy", "adapter", "precomputed", "none"] = "auto"
    # auto: the adapter-disabled base under LoRA, else a frozen copy; precomputed: reference
    # log-probs of the examples the run will use, computed before training and cached on disk.
    path: str = ""  # a different reference model (default: the starting policy)
    cache_dir: str = ""  # precomputed reference log-probs, reused across runs (default: $ALIGNKIT_CACHE/reference)


@dataclass
class EngineConfig:
    share_prompt: bool = True  # run each prompt once for its K responses (block-causal packing)
    chunk_size: int = 1024  # response positions per LM-head chunk (bounds the [tokens, vocab] buffer)
    compile: bool = False  # torch.compile the model's forward


@dataclass
class Config:
    method: str = "sft"  # a name from alignkit.losses.LOSSES, or sft / reward_model / raft / ppo ...
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: dict[str, Any] = field(default_factory=dict)  # the method's hyper-parameters (paper defaults)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    rewards: list[RewardSpec] = field(default_factory=list)  # reward functions (sampling methods, PPO, eval)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # generation for sampling methods and PPO
    ppo: PPOConfig = field(default_factory=PPOConfig)  # on-policy RL: ppo, rloo, grpo
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)  # method: reward_model
    online: OnlineConfig = field(default_factory=OnlineConfig)  # sampling methods: raft, rso, online, iterative_dpo


# ---------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{full}: unknown key{hint}; allowed: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = _parse_scalar(raw)
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Read a YAML file (or nothing), apply overrides, and build the typed config."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def save_config(cfg: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
