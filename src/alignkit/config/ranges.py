"""Allowed ranges of numeric settings, checked before any work with one message per bad key.

A :class:`Range` says which numbers a key takes and says so in its error:
``train.batch_size: must be >= 1, got 0``. Used by the config checks
(:mod:`alignkit.config`) and by the loss hyper-parameter checks
(:func:`alignkit.losses.check_hyperparameters`). Imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignkit.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """``low <(=) value <(=) high``; ``None`` leaves a side open, ``*_inclusive`` says ``<=``."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left = "[" if self.low_inclusive else "("
            right = "]" if self.high_inclusive else ")"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{'<=' if self.high_inclusive else '<'} {_num(self.high)}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and not self.high_inclusive)))

    def check(self, key: str, value: float) -> None:
        """Raise a :class:`ConfigError` naming ``key`` and this range unless ``value`` is in it."""
        if not self.contains(value):
            raise ConfigError(f"{key}: must be {self.describe()}, got {value!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


FINITE = Range()
POSITIVE = Range(0, None, low_inclusive=False)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)  # [0, 1]
UNIT_OPEN_RIGHT = Range(0, 1, high_inclusive=False)  # [0, 1)


def as_number(key: str, value: object, *, integer: bool = False) -> float | int:
    """``value`` as a float (or an int), accepting YAML's strings such as ``"1e-30"``; else a ConfigError."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if integer:
        if not float(value).is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


# Every numeric config key and what it takes; a ``[*]`` key applies to each item of a list.
# ``tests/test_ranges.py`` checks that every int and float field of ``Config`` is listed here.
CONFIG_RANGES: dict[str, Range] = {
    "model.lora.r": AT_LEAST_ONE,
    "model.lora.alpha": POSITIVE,
    "model.lora.dropout": UNIT_OPEN_RIGHT,
    "data.eval_size": NON_NEGATIVE,
    "data.split_seed": Range(-1),
    "data.max_rows": NON_NEGATIVE,
    "data.max_prompt_length": NON_NEGATIVE,  # 0: half of data.max_length
    "data.max_length": AT_LEAST_ONE,
    "train.seed": NON_NEGATIVE,
    "train.learning_rate": POSITIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.adam_betas[*]": UNIT_OPEN_RIGHT,
    "train.warmup_steps": NON_NEGATIVE,
    "train.max_steps": NON_NEGATIVE,
    "train.num_epochs": POSITIVE,
    "train.batch_size": AT_LEAST_ONE,
    "train.grad_accum": AT_LEAST_ONE,
    "train.max_grad_norm": NON_NEGATIVE,
    "train.log_every": NON_NEGATIVE,
    "train.eval_every": NON_NEGATIVE,
    "train.save_every": NON_NEGATIVE,
    "train.keep_checkpoints": NON_NEGATIVE,
    "train.max_nonfinite_steps": NON_NEGATIVE,
    "engine.chunk_size": AT_LEAST_ONE,
    "rewards[*].weight": FINITE,
    "rewards[*].batch_size": AT_LEAST_ONE,
    "rewards[*].max_length": AT_LEAST_ONE,
    "sampling.num_samples": AT_LEAST_ONE,
    "sampling.max_new_tokens": AT_LEAST_ONE,
    "sampling.temperature": NON_NEGATIVE,  # 0 is greedy; trainers that learn from samples ask for > 0
    "sampling.top_k": NON_NEGATIVE,
    "sampling.top_p": Range(0, 1, low_inclusive=False),
    "sampling.batch_size": AT_LEAST_ONE,
    "sampling.seed": NON_NEGATIVE,
    "sampling.diffusion_steps": AT_LEAST_ONE,
    "sampling.diffusion_eta": Range(0, 1, low_inclusive=False),
    "ppo.num_ppo_epochs": AT_LEAST_ONE,
    "ppo.num_minibatches": AT_LEAST_ONE,
    "ppo.kl_coef": NON_NEGATIVE,
    "ppo.target_kl": POSITIVE,
    "ppo.kl_horizon": POSITIVE,
    "ppo.reward_clip": POSITIVE,
    "ppo.missing_eos_penalty": FINITE,
    "ppo.gamma": FRACTION,
    "ppo.lam": FRACTION,
    "ppo.clip_eps": POSITIVE,
    "ppo.vf_clip_eps": POSITIVE,
    "ppo.vf_coef": NON_NEGATIVE,
    "ppo.ent_coef": NON_NEGATIVE,
    "ppo.target_kl_stop": POSITIVE,
    "ppo.ptx_coef": NON_NEGATIVE,
    "ppo.ptx_batch_size": AT_LEAST_ONE,
    "ppo.eval_samples": AT_LEAST_ONE,
    "ppo.clip_eps_high": POSITIVE,
    "ppo.seq_clip_low": POSITIVE,
    "ppo.seq_clip_high": POSITIVE,
    "ppo.overlong_buffer": NON_NEGATIVE,
    "ppo.overlong_penalty": NON_NEGATIVE,
    "ppo.dynamic_sampling_rounds": AT_LEAST_ONE,
    "ppo.tis_cap": Range(1),  # a weight min(ratio, C) with C < 1 would shrink on-policy tokens too
    "ppo.macro_n": AT_LEAST_ONE,
    "reward_model.max_length": AT_LEAST_ONE,
    "reward_model.center_examples": NON_NEGATIVE,
    "online.keep_stage_models": NON_NEGATIVE,  # 0: keep all
    "span_reward_model.min_span_words": NON_NEGATIVE,
    "span_reward_model.max_length": AT_LEAST_ONE,
    "span_reward_model.error_reward": FINITE,
    "span_reward_model.ok_reward": FINITE,
    "span_reward_model.error_weight": POSITIVE,
    "span_reward_model.validation_size": NON_NEGATIVE,
    "span_reward_model.context_lines": NON_NEGATIVE,
    "online.stages": AT_LEAST_ONE,
    "online.prompts_per_stage": NON_NEGATIVE,
    "online.kl_beta": NON_NEGATIVE,
    "online.rso_beta": POSITIVE,
    "online.rso_num_accepted": Range(2),
    "online.mixture_coef": Range(0, 1),  # a weight of the geometric mixture pi^(1-m) pi_ref^m
    "mixture.num_groups": AT_LEAST_ONE,
    "mixture.em_iterations": AT_LEAST_ONE,
    "mixture.init_steps": AT_LEAST_ONE,
    "mixture.m_step_steps": AT_LEAST_ONE,
    "ppo.micro_batch_size": NON_NEGATIVE,  # 0: no splitting
}


def check_sampling_temperature(cfg: object) -> None:
    """A trainer that learns from its own samples needs ``sampling.temperature > 0``: at 0 sampling is
    greedy (K identical samples) and the policy's sampling log-probs are undefined."""
    temperature = cfg.sampling.temperature  # type: ignore[attr-defined]
    if not POSITIVE.contains(temperature):
        raise ConfigError(f"sampling.temperature: must be > 0 for method {cfg.method!r}, which learns from "  # type: ignore[attr-defined]
                          f"its samples (0 is greedy decoding), got {temperature!r}")


CONFIG_LENGTHS = {"train.adam_betas": 2}  # lists of a fixed length


def check_config_ranges(cfg: object) -> None:
    """Raise a :class:`ConfigError` for the first key of :data:`CONFIG_RANGES` whose value is out of
    its range (``None``, an unset optional, passes), or a list of the wrong length."""
    for key, length in CONFIG_LENGTHS.items():
        for name, value in _values(cfg, key):
            if len(value) != length:
                raise ConfigError(f"{name}: expected a list of {length} numbers, got {value!r}")
    for key, allowed in CONFIG_RANGES.items():
        for name, value in _values(cfg, key):
            if value is not None:
                allowed.check(name, value)


def _values(cfg: object, key: str) -> list[tuple[str, object]]:
    """``(full key, value)`` pairs of a dotted key; ``a[*].b`` expands over the list ``a``."""
    found = [("", cfg)]
    for part in key.split("."):
        each = part.endswith("[*]")
        name = part.removesuffix("[*]")
        step = []
        for prefix, node in found:
            full = f"{prefix}.{name}" if prefix else name
            value = getattr(node, name) if not isinstance(node, dict) else node.get(name)
            if each:
                step += [(f"{full}[{i}]", v) for i, v in enumerate(value or [])]
            else:
                step.append((full, value))
        found = step
    return found
