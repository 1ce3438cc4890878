"""The ``ppo:`` section: on-policy RL (methods ppo, rloo, grpo and the RL family; see :mod:`alignkit.train.ppo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class PPOConfig:
    """The ``ppo:`` section: on-policy RL (methods ppo, rloo, grpo and the RL family); see :mod:`alignkit.train.ppo`."""

    num_ppo_epochs: int = 4  # optimisation passes over each rollout
    num_minibatches: int = 1  # optimizer steps per pass; each takes train.batch_size x train.grad_accum prompts
    kl_coef: float = 0.05  # beta: (initial) coefficient of the KL penalty
    target_kl: float | None = None  # adaptive beta steering the KL per sample (nats) towards this (Ziegler); None: fixed
    kl_horizon: float = 10000.0  # adaptive controller horizon, in samples
    kl_estimator: Literal["k1", "k3", "mse", "abs"] = "k1"  # per-token KL in the reward (k1: log pi - log pi_ref)
    reward_clip: float | None = None  # clip each score (or dense segment) into [-c, c]; None: no clipping
    center_rewards: bool = False  # subtract the running mean of the scores
    scale_rewards: bool = False  # divide the scores by their running std
    whiten_rewards: bool = False  # whiten the shaped per-token rewards of each rollout (keeping their mean)
    missing_eos_penalty: float = 0.0  # subtracted from the score of a sample that does not end with EOS
    gamma: float = 1.0  # discount of GAE
    lam: float = 0.95  # lambda of GAE
    clip_eps: float = 0.2  # PPO ratio clip
    vf_clip_eps: float = 0.2  # value clip around the old values
    vf_coef: float = 0.1  # weight of the value loss
    ent_coef: float = 0.0  # weight of the entropy bonus
    whiten_advantages: bool = True  # ppo: whiten the GAE advantages of each rollout (RLOO, GRPO have baselines)
    target_kl_stop: float | None = None  # stop a step's update when a minibatch's approx KL(old||new) exceeds it
    value_model: Literal["shared", "separate"] = "shared"  # ppo critic: a head on the policy's body, or a copy of it
    value_head_init: Literal["zeros", "normal"] = "zeros"  # zeros: V=0 at start, no gradient into a shared body yet
    ptx_coef: float = 0.0  # PPO-ptx: weight of the pretraining NLL added to every update (InstructGPT's gamma)
    ptx_data: str = ""  # pretraining/SFT data for PPO-ptx (any sft-like file; alignkit:NAME for built-ins)
    ptx_batch_size: int = 8  # pretraining examples per optimizer step and process
    eval_samples: int = 1  # samples per held-out prompt when evaluating (eval/reward, eval/objective/kl)
    clip_eps_high: float | None = None  # DAPO's decoupled upper clip (clip-higher, 0.28 in the paper); None: clip_eps
    seq_clip_low: float = 3e-4  # GSPO: lower clip of the sequence-level ratio (paper: 3e-4)
    seq_clip_high: float = 4e-4  # GSPO: upper clip of the sequence-level ratio (paper: 4e-4)
    overlong_buffer: int = 0  # DAPO: soft length penalty over the last N tokens of max_new_tokens; 0: off
    overlong_penalty: float = 1.0  # DAPO: the penalty at max_new_tokens (paper: 1)
    dynamic_sampling: bool = False  # DAPO: drop groups whose K rewards are all equal, sample more to refill
    dynamic_sampling_rounds: int = 4  # at most this many sampling rounds per step; short batches keep equal groups
    tis_cap: float | None = None  # truncated IS cap C when another engine samples: per token (dapo, dr_grpo, reinforce_pp*), per response (gspo, rloo); None: off
    macro_action: Literal["ngram", "punctuation"] = "ngram"  # MA-RLHF: fixed n-grams or punctuation-ended spans
    macro_n: int = 5  # MA-RLHF: tokens per n-gram macro action (the longest punctuation span too)
    micro_batch_size: int = 0  # samples per forward-backward of the update (gradients accumulate over them); 0: a train.grad_accum share at once
