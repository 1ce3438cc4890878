"""Typed run configuration: dataclasses loaded from YAML, overridable as ``key.sub=value``.

A torch-free package (a test keeps it so): ``import alignkit.config`` loads the sections
and the loader, nothing of ``train/``, ``engine/`` or ``models/``, which import it.

- :mod:`~alignkit.config.sections`: ``Config`` and the general sections (model, data, train, ...);
- :mod:`~alignkit.config.sampling`: ``sampling:`` (generation) and ``online:`` (sampling methods);
- :mod:`~alignkit.config.rl`: ``ppo:`` (on-policy RL);
- :mod:`~alignkit.config.rewards`: ``rewards:`` entries and ``reward_model:``;
- :mod:`~alignkit.config.loading`: YAML + overrides -> typed config, with clear errors.
"""

from alignkit.config.loading import (
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from alignkit.config.rewards import RewardModelConfig, RewardSpec, SpanRewardModelConfig
from alignkit.config.rl import PPOConfig
from alignkit.config.sampling import OnlineConfig, SamplingConfig
from alignkit.config.sections import (
    Config,
    DataConfig,
    EngineConfig,
    LoraConfig,
    ModelConfig,
    ReferenceConfig,
    TrainConfig,
)

__all__ = [
    "Config", "DataConfig", "EngineConfig", "LoraConfig", "ModelConfig", "OnlineConfig", "PPOConfig",
    "ReferenceConfig", "RewardModelConfig", "RewardSpec", "SamplingConfig", "SpanRewardModelConfig", "TrainConfig",
    "apply_overrides", "from_dict", "load_config", "save_config", "to_dict",
]
