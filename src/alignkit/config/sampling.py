"""Sampling settings: ``sampling:`` (generation, see :mod:`alignkit.engine.generation`) and ``online:``
(the sampling methods RAFT, RSO, online, iterative DPO; see :mod:`alignkit.train.sampling`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class SamplingConfig:
    num_samples: int = 4  # K responses per prompt
    max_new_tokens: int = 64  # response budget in tokens
    temperature: float = 1.0  # sampling temperature (0: greedy)
    top_k: int = 0  # keep the k most likely tokens (0: off)
    top_p: float = 1.0  # nucleus sampling mass (1: off)
    batch_size: int = 16  # prompts per generate call
    seed: int = 0  # sampling seed
    backend: str = "transformers"  # transformers, vllm (CUDA GPU, `pip install alignkit[vllm]`), or auto
    diffusion_steps: int = 10  # diffusion methods: DDIM steps per sampled chain (DDPO's paper: 50)
    diffusion_eta: float = 1.0  # diffusion methods: DDIM stochasticity, > 0 so each step has a log-probability (1: DDPM)


@dataclass
class OnlineConfig:
    """Settings of ``method: raft | rso | online | iterative_dpo | spin | nash_md | xpo``.

    The epochs of the fine-tuning step of each stage (RAFT's E) are ``train.num_epochs``
    (or ``train.max_steps`` steps), with a fresh optimizer and schedule per stage. The
    starting policy (pi_ref of eq. 5, and of the loss under ``reference: initial``) is
    ``model``, or ``reference.path`` when set; references are frozen copies. Every stage
    samples the current policy: RSO's pi_sft is the starting one, so RSO runs one stage.
    """

    stages: int = 2  # stages (RAFT) / iterations (online, iterative DPO) of sample -> score -> select -> fine-tune
    prompts_per_stage: int = 0  # b: prompts drawn from data.train per stage, without replacement, seeded (0: all)
    sources: list[str] = field(default_factory=lambda: ["policy"])  # candidates ranked together: policy (K samples), dataset (the row's own responses), reference (K samples of the starting policy: xpo), mixture (K samples of its geometric mixture with the policy: nash_md), or a model path / Hub id (K samples)
    sampler_model: str = ""  # sample the 'policy' source from this model instead (RAFT distillation from an expert); empty: the policy being trained
    ranking: Literal["local", "global"] = "local"  # raft: keep the best response of each prompt, or the top 1/K of all samples
    kl_beta: float = 0.0  # rank by r(x,y) - kl_beta * log(pi/pi_ref)(y|x) (RAFT eq. 5); 0: by the reward alone
    filter: str = ""  # 'module:function' called as fn(prompts, responses, scores) -> keep mask, before selection (e.g. drop reward hacks)
    rso_beta: float = 0.5  # rso: beta of the target policy pi_sft * exp(r / beta) (RSO Algorithm 1)
    rso_num_accepted: int = 8  # rso: samples accepted per prompt, then paired at random and labelled by the reward
    loss: str = ""  # the update: 'sft' or a loss in alignkit.losses.LOSSES; empty: raft sft, rso dpo, online rrhf, iterative_dpo dpo
    loss_args: dict[str, Any] = field(default_factory=dict)  # that loss's hyper-parameters (empty: paper defaults)
    keep_stage_models: int = 0  # full-weight stage models kept in stages/ (the last N, at least 1; 0: all); a LoRA stage keeps its adapter, which is small
    reference: Literal["auto", "initial", "previous"] = "auto"  # pi_ref of the loss and eq. 5: the starting policy, or the policy at the start of each stage (auto: previous for iterative_dpo, else initial)
    mixture_coef: float = 0.5  # source 'mixture' (nash_md): weight m of the starting policy in the token-level geometric mixture pi^(1-m) pi_ref^m (0: the policy itself, self-play)
