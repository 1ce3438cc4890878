"""The run's config sections: plain dataclasses, one per YAML section.

Every field carries a one-line comment that doubles as documentation. Torch-free: the
method-specific sections live beside these in :mod:`alignkit.config` (``sampling``,
``rl``, ``rewards``), so that loading and checking a config imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from alignkit.config.rewards import MixtureConfig, RewardModelConfig, RewardSpec, SpanRewardModelConfig
from alignkit.config.rl import PPOConfig
from alignkit.config.sampling import OnlineConfig, SamplingConfig


@dataclass
class LoraConfig:
    enabled: bool = False  # train a LoRA adapter instead of all weights (peft)
    r: int = 8  # adapter rank
    alpha: int = 16  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # peft target modules
    save_merged: bool = False  # also save the adapter merged into the base weights, as final/merged


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
    format: str = "auto"  # auto, pairwise, hh_rlhf, ranked, qa_feedback, span_feedback, unpaired, prompt, sft
    split: str = "train"  # split of a dataset folder or Hub dataset
    eval_split: str = "test"  # split used for `eval` when it names a dataset with splits
    eval_size: float = 0.0  # rows held out from `train` when `eval` is empty (a fraction if < 1)
    skip_bad_rows: bool = False  # skip unparseable rows (counted in the log) instead of stopping
    max_rows: int = 0  # use only the first max_rows training rows (0: all)
    max_prompt_length: int = 0  # prompt tokens kept, below max_length (0: half of max_length); longer prompts are truncated
    max_length: int = 1024  # prompt + response tokens; responses are cut to fit
    truncation: Literal["keep_end", "keep_start"] = "keep_end"  # which part of a long prompt is kept
    drop_long_prompts: bool = False  # drop rows whose prompt is longer than max_prompt_length instead
    chat_strings: bool = False  # render string rows (HH dialogues, prompt/chosen/rejected) with the chat template
    split_seed: int = -1  # seed of the eval_size split (-1: train.seed); fixed, runs of several seeds hold out the same rows


@dataclass
class TrainConfig:
    output_dir: str = "runs/alignkit"  # run folder: config, metrics.jsonl, checkpoints, final model
    seed: int = 0  # seeds python, numpy and torch on every process
    learning_rate: float = 1e-5  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # decay after warm-up
    warmup_steps: int = 0  # linear warm-up optimizer steps: step s (from 0) runs at lr * (s + 1) / warmup_steps
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
    resume: bool = False  # continue from the last good checkpoint in output_dir
    overwrite: bool = False  # a fresh run (resume false) deletes an earlier run's checkpoints and stages in output_dir
    max_nonfinite_steps: int = 0  # optimizer steps with a non-finite loss or grad norm skipped before the run stops
    save_on_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])  # save and exit on these
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
    span_reward_model: SpanRewardModelConfig = field(default_factory=SpanRewardModelConfig)  # method: span_reward_model
    online: OnlineConfig = field(default_factory=OnlineConfig)  # sampling methods: raft, rso, online, iterative_dpo
    mixture: MixtureConfig = field(default_factory=MixtureConfig)  # method: maxmin_reward_models (MaxMin-RLHF)
