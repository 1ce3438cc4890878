"""On-policy RL from feedback: PPO (InstructGPT), PPO-ptx, RLOO and GRPO, one trainer.

Every step (CleanRL's "iteration") reads top to bottom:

1. **Rollout** (:mod:`alignkit.train.rollout`): ``batch_size x grad_accum x num_minibatches``
   prompts per process, chosen by (seed, step); K = ``sampling.num_samples`` samples each,
   seeded by (seed, step, process); rewards; per-token log-probs of the policy (the decode's
   own when it sampled in fp32 and no critic needs a forward, else one no-gradient forward) and
   of the reference (none at a fixed ``kl_coef: 0``); the critic's values.
2. **Rewards.** The task score is optionally normalised by running moments, clipped and
   lowered for a sample without EOS (:func:`~alignkit.train.rollout.task_rewards`), then
   shaped as in InstructGPT (Ouyang et al. 2022, eq. 2; Ziegler et al. 2019):
   ``r_t = -beta * (log pi - log pi_ref)_t`` on every token plus the score on the last one,
   or a dense reward's segment values on each segment's last token (Fine-Grained RLHF, Wu
   et al. 2023). ``beta`` is fixed, or adapted towards ``target_kl`` (Ziegler's controller).
3. **Advantages**, by method (:data:`ALGORITHMS`, the one place a method name is looked up):
   ``ppo``: GAE over the critic's values, whitened. ``rloo``: REINFORCE with the
   leave-one-out baseline over a prompt's K samples (Ahmadian et al. 2024), the return of
   a sample being its whole shaped reward ``R = r - beta * KL`` (as TRL's RLOOTrainer).
   ``grpo``: the score normalised within the prompt's group (Shao et al. 2024, sec. 4.1),
   with the KL as a per-token loss term ``beta * k3`` as in the paper, not in the reward:
   GRPO's advantage is one number per sample, so a KL penalty in the reward would be
   group-normalised into one number per sample too. (GRPO still logs the shaped reward.)
4. **Update**: ``num_ppo_epochs`` passes in ``num_minibatches`` minibatches of whole
   prompts, each one optimizer step on the clipped surrogate (Schulman et al. 2017, eq. 7)
   + ``vf_coef`` x the clipped value loss - ``ent_coef`` x the entropy + ``ptx_coef`` x the
   NLL of a pretraining batch (PPO-ptx, InstructGPT eq. 2). PPO's and GRPO's ratio is per
   token, RLOO's per sample (its action is the whole response). An update stops once a
   minibatch's approximate KL(old || new) exceeds ``target_kl_stop``. Losses are per sample,
   averaged over the minibatch; the learning-rate schedule counts steps (rollouts).
5. **Log** the step, and adapt the KL coefficient to the KL just measured.

The run around these steps (accelerator, optimizer, schedule, checkpoints, metrics log,
evaluation, final save) is :class:`~alignkit.train.runtime.Run`; each minibatch is one
:func:`~alignkit.train.runtime.optimizer_step` (accumulation, clipping, DeepSpeed boundaries).

Memory: ``model.lora.enabled`` with ``value_model: shared`` holds ONE copy of the base
weights: the policy is the adapter on the frozen base, the critic a head on that body, the
reference the same model with its adapter off. Full fine-tuning holds the policy, a frozen
reference copy and (``value_model: separate``) a critic body. Dropout is off, so that the
ratio is exactly 1 at the first minibatch.

Resume: every ``train.save_every`` steps an atomic checkpoint holds model, critic,
optimizer and schedule (Accelerate), the KL coefficient and the reward moments (tracked by the run); prompts,
samples and minibatch order depend on (seed, step) alone, so a resumed run repeats the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from alignkit.config.ranges import check_sampling_temperature
from alignkit.data.pipeline import load_tokenized
from alignkit.engine.backends import sampler_for
from alignkit.engine.batch import ResponseBatch, collate
from alignkit.errors import ConfigError
from alignkit.losses.reduce import global_mean
from alignkit.losses.rl import (
    AdaptiveKLController,
    FixedKLController,
    entropy_bonus,
    explained_variance,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_value_loss,
    shape_rewards,
    whiten,
)
from alignkit.losses.rl_family import truncated_importance_weights
from alignkit.models.loading import save_pretrained, sub_state_dict
from alignkit.rewards import build_reward
from alignkit.train.accelerator import is_deepspeed
from alignkit.train.algorithms import ALGORITHMS, Algorithm, Minibatch
from alignkit.train.build import build_reference, policy_and_data
from alignkit.train.methods import MethodSpec, StepShape, method_family
from alignkit.train.rollout import (
    PPOConfig,
    Rollout,
    RunningMoments,
    build_actor_critic,
    collect_rollout,
    disable_dropout,
    evaluate_policy,
    task_rewards,
)
from alignkit.train.runtime import (
    MetricSums,
    Run,
    global_batch_indices,
    mean_over_processes,
    optimizer_step,
    total_steps,
)
from alignkit.train.sft import best_response_only

Tensor = torch.Tensor


# ---------------------------------------------------------------- one update


def _seed(*parts: int) -> int:
    """A seed for (seed, step, ...): different for every tuple, the same on every run."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2**31 - 1)
    return value


def minibatch_loss(algo: Algorithm, cfg: PPOConfig, module, accelerator, rollout: Rollout, prompts: Tensor,
                   advantages: Tensor, returns: Tensor | None, beta: float,
                   samples: slice = slice(None)) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sample loss ``[n]`` of the samples ``samples`` (all K by default) of ``prompts`` under the
    current policy, and its metrics."""
    rows = rollout.rows(prompts, samples)
    with accelerator.autocast():
        out = module(rollout.batch(prompts, samples), values=algo.critic, entropy=cfg.ent_coef != 0)
    L = out.mask.shape[1]  # this forward's longest response, <= the rollout's
    mb = Minibatch(
        old_logprobs=rollout.logprobs[rows, :L], ref_logprobs=rollout.ref_logprobs[rows, :L],
        advantages=advantages[rows, :L], mask=rollout.mask[rows, :L],
        old_values=rollout.values[rows, :L] if algo.critic else None,
        returns=returns[rows, :L] if algo.critic else None,
        macro_ids=None if rollout.macro_ids is None else rollout.macro_ids[rows, :L],
        is_weights=None if rollout.is_weights is None else rollout.is_weights[rows, :L],
        rollout_logprobs=None if rollout.is_weights is None else rollout.sampler_logprobs[rows, :L],
        max_length=rollout.max_new_tokens,
    )
    pg_loss, pg_stats = algo.policy_loss(out.logprobs, mb, beta, cfg)  # (n,)
    loss, stats = pg_loss, {"loss/policy": pg_loss.mean(), **pg_stats}
    if cfg.ent_coef != 0:  # per sample, or summed over tokens like a token-level policy loss
        bonus = masked_sum(out.entropy, mb.mask, dim=1) if algo.token_level else entropy_bonus(out.entropy, mb.mask)
        loss = loss - cfg.ent_coef * bonus
    if algo.critic:
        vf_loss, vf_stats = ppo_value_loss(out.values, mb.old_values, mb.returns, mb.mask, cfg.vf_clip_eps)  # (n,)
        loss = loss + cfg.vf_coef * vf_loss
        stats.update({"loss/value": vf_loss.mean(), **vf_stats})
    return loss, stats


def ppo_update(algo: Algorithm, cfg: PPOConfig, module, optimizer, accelerator, rollout: Rollout,
               advantages: Tensor, returns: Tensor | None, beta: float, *, step: int, seed: int,
               grad_accum: int = 1, max_grad_norm: float = 0.0, ptx=None, guard=None) -> dict[str, float]:
    """``num_ppo_epochs`` passes of ``num_minibatches`` optimizer steps over ``rollout``; mean metrics.

    A minibatch (whole prompts, in an order set by (seed, step, epoch)) is split into
    ``grad_accum`` forwards, one optimizer step (:func:`~alignkit.train.runtime.optimizer_step`).
    ``ptx``: ``fn(index) -> ResponseBatch`` of pretraining text, or None. ``guard`` (the run's
    :class:`~alignkit.train.guard.StepGuard`) vets every update: a non-finite one is never applied.
    """
    stats = MetricSums()
    B, K, world = len(rollout.prompt_ids), rollout.num_samples, accelerator.num_processes
    epochs_run, stop = 0, False
    for epoch in range(cfg.num_ppo_epochs):
        order = torch.randperm(B, generator=torch.Generator().manual_seed(_seed(seed, step, epoch)))
        for m, prompts in enumerate(order.chunk(cfg.num_minibatches)):
            micro_batches = []
            if ptx is not None:  # PPO-ptx: + gamma * NLL per token of pretraining text (InstructGPT eq. 2)
                micro_batches.append(_ptx_loss(cfg, module, accelerator, ptx,
                                               (step * cfg.num_ppo_epochs + epoch) * cfg.num_minibatches + m))
            units = len(prompts) * K * world  # samples of the minibatch over all processes
            if algo.token_level:  # every process reaches this reduce at the same minibatch
                units = float(accelerator.reduce(rollout.mask[rollout.rows(prompts)].sum().float(), "sum"))
            for micro_prompts in prompts.chunk(grad_accum):
                for forward_prompts, samples in sample_chunks(micro_prompts, K, cfg.micro_batch_size):
                    micro_batches.append(_surrogate_loss(algo, cfg, module, accelerator, rollout, forward_prompts,
                                                         advantages, returns, beta, units, samples))
            step_stats = optimizer_step(accelerator, module, optimizer, micro_batches, max_grad_norm=max_grad_norm,
                                        grad_norm_weight=1.0, guard=guard, step=step + 1)
            stats.merge(step_stats)
            approx_kl = torch.tensor(step_stats.values("approx_kl"), device=accelerator.device).mean()
            if cfg.target_kl_stop is not None and accelerator.reduce(approx_kl, "mean") > cfg.target_kl_stop:
                stop = True  # the mean over processes: every process stops at the same minibatch
                break
        epochs_run += 1
        if stop:
            break
    return {**stats.local_means(), "ppo_epochs": epochs_run, "early_stop": float(stop)}


def sample_chunks(prompts: Tensor, k: int, size: int) -> list[tuple[Tensor, slice]]:
    """``(prompts, samples)`` of each forward-backward over the K samples of ``prompts``, at most ``size``
    samples each (``ppo.micro_batch_size``; 0: all at once): whole prompts ``size // K`` at a time, or, when
    ``size < K``, one prompt's samples ``size`` at a time (its prompt then runs once per chunk).
    Example: prompts [3, 5], K = 8, size 4 -> (3, 0:4), (3, 4:8), (5, 0:4), (5, 4:8)."""
    if size <= 0 or size >= len(prompts) * k:
        return [(prompts, slice(None))]
    if size >= k:
        return [(chunk, slice(None)) for chunk in prompts.split(size // k)]
    return [(prompts[i : i + 1], slice(j, j + size)) for i in range(len(prompts)) for j in range(0, k, size)]


def _surrogate_loss(algo, cfg, module, accelerator, rollout, prompts, advantages, returns, beta, units,
                    samples: slice = slice(None)):
    """A micro-batch of :func:`ppo_update`: the policy (and value) loss of ``prompts``' samples ``samples``,
    summed over samples and divided by the minibatch's samples over all processes."""
    def forward():
        loss, stats = minibatch_loss(algo, cfg, module, accelerator, rollout, prompts, advantages, returns, beta,
                                     samples)
        return global_mean(loss.sum(), units, accelerator.num_processes), stats, 1.0
    return forward


def _ptx_loss(cfg, module, accelerator, ptx, index: int):
    """A micro-batch of :func:`ppo_update`: ``ptx_coef`` x the per-token NLL of pretraining batch ``index``."""
    def forward():
        with accelerator.autocast():
            out = module(ptx(index), values=False, entropy=False)
        nll = -masked_sum(out.logprobs, out.mask) / out.mask.sum().clamp(min=1)
        return cfg.ptx_coef * nll, {"loss/ptx": nll}, 1.0
    return forward


# ---------------------------------------------------------------- the trainer


def check_config(cfg) -> None:
    check_sampling_temperature(cfg)
    if not cfg.rewards:
        raise ConfigError(f"rewards: method {cfg.method!r} needs a reward, e.g. rewards: [{{kind: vader}}]")
    if cfg.reference.mode in ("none", "precomputed"):
        raise ConfigError(f"reference.mode: {cfg.reference.mode!r} does not work for {cfg.method} (it scores fresh "
                          "samples every step); use auto, copy or adapter")
    if cfg.sampling.num_samples < ALGORITHMS[cfg.method].min_samples:
        raise ConfigError(f"sampling.num_samples: {cfg.method} needs at least "
                          f"{ALGORITHMS[cfg.method].min_samples} samples per prompt")
    if cfg.ppo.ptx_coef > 0 and not cfg.ppo.ptx_data:
        raise ConfigError("ppo.ptx_data: ppo.ptx_coef > 0 needs pretraining data")


def _refuse_unsupported_engine(accelerator, method: str) -> None:
    """ZeRO-3 was seen to break on-policy RL (one H100, 2026-11): refused before any work."""
    if is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError(f"{method} does not run under DeepSpeed ZeRO-3 yet: the reference model's forward fails "
                          "once the policy is partitioned; launch with configs/accelerate/deepspeed_zero2.yaml, "
                          "configs/accelerate/fsdp.yaml or configs/accelerate/ddp.yaml")


def uses_no_reference(ppo: PPOConfig) -> bool:
    """``kl_coef: 0`` with no adaptive target: every KL term is multiplied by 0."""
    return ppo.kl_coef == 0 and ppo.target_kl is None


def rewards_and_advantages(algo: Algorithm, cfg: PPOConfig, rollout: Rollout, moments: RunningMoments,
                           beta: float) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Steps 2 and 3: processed scores ``[N]``, shaped rewards, advantages and returns ``[N, T]``."""
    scores, segments = task_rewards(rollout, cfg, moments)
    kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, rollout.mask, cfg.kl_estimator)  # (N, T)
    rewards = shape_rewards(scores if segments is None else None, kl, rollout.mask, beta, dense=segments)  # (N, T)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, rollout.mask, shift_mean=False)
    advantages, returns = algo.advantages(rollout, rewards, scores, cfg)
    return scores, rewards, advantages, returns


def train_rl(cfg) -> Path:
    """Run PPO, RLOO or GRPO (``cfg.method``) per ``cfg``; returns the run folder."""
    algo, ppo, tcfg = ALGORITHMS[cfg.method], cfg.ppo, cfg.train
    run = Run(tcfg, desc=cfg.method)
    _refuse_unsupported_engine(run.accelerator, cfg.method)
    accelerator, rank, world = run.accelerator, run.rank, run.world
    policy, tokenizer, train, held_out = policy_and_data(cfg, batches_per_step=ppo.num_minibatches)
    module = build_actor_critic(policy, algo.critic, cfg, tokenizer.pad_token_id)
    disable_dropout(module)
    module.to(accelerator.device)
    # a KL coefficient fixed at 0 never reads the reference: neither built nor run (as TRL's beta 0)
    reference = None if uses_no_reference(ppo) else build_reference(
        cfg, policy, module.scorer, tokenizer.pad_token_id, []).to(accelerator.device)
    reward = build_reward(cfg.rewards)
    ptx = ptx_batches(cfg, tokenizer, rank, world) if ppo.ptx_coef > 0 else None
    prompts_per_step = tcfg.batch_size * tcfg.grad_accum * ppo.num_minibatches  # per process
    # the schedule counts PPO steps (rollouts), not minibatch updates
    module = run.prepare(module, total_steps(tcfg, len(train), world, batches_per_step=ppo.num_minibatches))
    sampler = sampler_for(cfg.sampling, accelerator.device, cfg.model.name_or_path)
    kl_ctl = (FixedKLController(ppo.kl_coef) if ppo.target_kl is None
              else AdaptiveKLController(ppo.kl_coef, ppo.target_kl, ppo.kl_horizon))
    moments, tokens = RunningMoments(), TokenCount()
    run.track("kl_ctl", kl_ctl)
    run.track("moments", moments)
    run.track("tokens", tokens)
    eval_prompts = [ex.prompt_ids for ex in held_out][rank::world]
    eval_texts = [ex.prompt_text for ex in held_out][rank::world]
    eval_sampling = replace(cfg.sampling, num_samples=ppo.eval_samples, seed=_seed(cfg.sampling.seed, tcfg.seed, rank))
    if held_out:
        run.evaluate = lambda: mean_over_processes(accelerator, evaluate_policy(
            module, reference, reward, tokenizer, eval_prompts, eval_sampling, eval_texts))

    def collect(step: int, round_: int = 0) -> Rollout:
        """Prompts chosen by (seed, step, round), samples seeded by (seed, step, process, round)."""
        extra = (round_,) if round_ else ()  # round 0 keeps the seeds of a run without dynamic sampling
        indices = global_batch_indices(len(train), prompts_per_step * world, step, tcfg.seed + round_)[rank::world]
        sampling = replace(cfg.sampling, seed=_seed(cfg.sampling.seed, tcfg.seed, step, rank, *extra))
        with accelerator.autocast():
            return collect_rollout(module, reference, reward, tokenizer, [train[i].prompt_ids for i in indices],
                                   sampling, values=algo.critic, sampler=sampler,
                                   prompt_texts=[train[i].prompt_text for i in indices])

    for step in run.steps():
        # 1. rollout (DAPO's dynamic sampling: more rounds until every group's K rewards differ)
        if ppo.dynamic_sampling:
            from alignkit.train.rl_family import informative_rollout

            def fewest_kept(n: int) -> int:
                return int(accelerator.gather(torch.tensor([n], device=accelerator.device)).min())

            rollout = informative_rollout(lambda r, s=step: collect(s, r), ppo.dynamic_sampling_rounds, fewest_kept)
        else:
            rollout = collect(step)
        if algo.prepare is not None:
            algo.prepare(rollout, tokenizer, ppo)
        if ppo.tis_cap is not None and rollout.sampler_logprobs is not None:  # another engine sampled
            rollout.is_weights = truncated_importance_weights(rollout.logprobs, rollout.sampler_logprobs,
                                                              rollout.mask, ppo.tis_cap)
        # 2. rewards (score + per-token KL penalty, InstructGPT eq. 2) and 3. advantages
        beta = kl_ctl.value
        moments.update(accelerator.gather(rollout.scores))
        scores, rewards, advantages, returns = rewards_and_advantages(algo, ppo, rollout, moments, beta)
        # 4. update: num_ppo_epochs x num_minibatches optimizer steps, then one step of the schedule
        update = ppo_update(algo, ppo, module, run.optimizer, accelerator, rollout, advantages, returns, beta,
                            step=step, seed=tcfg.seed, grad_accum=tcfg.grad_accum,
                            max_grad_norm=tcfg.max_grad_norm, ptx=ptx, guard=run.guard)
        run.scheduler.step()
        # 5. log, and adapt the KL coefficient to the KL just measured
        metrics = step_metrics(rollout, scores, rewards, returns, has_reference=reference is not None)
        update = {TRL_NAMES.get(k, k): v for k, v in update.items()}
        record = {"step": step + 1, **mean_over_processes(accelerator, {**metrics, **update}), "kl_coef": beta,
                  "learning_rate": run.scheduler.get_last_lr()[0], "gen/tokens_per_s": rollout.metrics["gen/tokens_per_s"],
                  **tokens.count(rollout, accelerator, run.step_seconds()),
                  "epoch": (step + 1) * prompts_per_step * world / max(len(train), 1)}
        if reference is not None:
            kl_ctl.update(record["objective/kl"], n_steps=len(rollout.scores) * world)
        run.end_step(record, show=("reward", "objective/kl", "kl_coef"))
    run.finish(lambda unwrapped, out_dir, state: save_final(unwrapped, tokenizer, out_dir, state,
                                                            save_merged=cfg.model.lora.save_merged))
    return run.output_dir


# the update's statistics (named by the loss layer) -> the names TRL's PPOTrainer / GRPOTrainer log them under
TRL_NAMES = {
    "loss/policy": "loss/policy_avg", "loss/value": "loss/value_avg", "approx_kl": "policy/approxkl_avg",
    "clipfrac": "policy/clipfrac_avg", "vf_clipfrac": "val/clipfrac_avg", "ratio_mean": "val/ratio",
    "clipfrac_low": "clip_ratio/low_mean", "clipfrac_high": "clip_ratio/high_mean", "kl_loss": "kl",
}


def step_metrics(rollout: Rollout, scores: Tensor, rewards: Tensor, returns: Tensor | None,
                 has_reference: bool = True) -> dict[str, Tensor]:
    """What a step logs about its rollout (the update adds its losses), named as TRL names the same
    quantity (``docs/metrics.md``)."""
    mask = rollout.mask
    shaped = rewards.sum(1)  # (N,) score - beta * KL, summed over each sample
    K = rollout.num_samples
    metrics = {
        "reward": rollout.scores.mean(),  # the raw task reward
        "reward_std": rollout.scores.std() if len(rollout.scores) > 1 else rollout.scores.new_zeros(()),
        "reward/score": scores.mean(),  # after normalisation, clipping and the EOS penalty
        "objective/rlhf_reward": shaped.mean(),
        "objective/non_score_reward": (shaped - scores).mean(),  # -beta * KL summed over each sample
        "objective/entropy": masked_sum(-rollout.logprobs, mask, dim=1).mean(),  # -log pi(y|x), TRL's estimate
        "entropy": masked_mean(rollout.entropy, mask),  # per token, from the full next-token distributions
        "completions/mean_length": mask.sum(1).float().mean(),
        "completions/clipped_ratio": 1 - rollout.ended.float().mean(),  # samples cut at max_new_tokens
        # the reward's own diagnostics (e.g. each group's reward under MaxMin-RLHF's min)
        **{k: torch.tensor(v) for k, v in rollout.metrics.items() if k.startswith("reward/")},
    }
    if has_reference:  # (no reference at kl_coef 0: the KL is not measured)
        metrics["objective/kl"] = kl_penalty(rollout.logprobs, rollout.ref_logprobs, mask).sum(1).mean()  # k1
    if K > 1:
        metrics["frac_reward_zero_std"] = (rollout.scores.view(-1, K).std(1) == 0).float().mean()
    if returns is not None:
        metrics["explained_variance"] = explained_variance(rollout.values, returns, mask)
    return metrics


class TokenCount:
    """TRL's ``num_tokens``: prompt + response tokens of every sample trained on so far, over all processes
    (a prompt counts once per sample, as TRL counts input tokens); saved in checkpoints."""

    def __init__(self) -> None:
        self.seen = 0

    def count(self, rollout: Rollout, accelerator, seconds: float) -> dict[str, float]:
        """Add ``rollout``'s tokens (summed over processes: every process calls this once per step)."""
        mine = sum(len(p) * len(rs) + sum(map(len, rs)) for p, rs in zip(rollout.prompt_ids, rollout.response_ids))
        step_tokens = int(accelerator.reduce(torch.tensor(float(mine), device=accelerator.device), "sum"))
        self.seen += step_tokens
        return {"num_tokens": self.seen, "tokens_per_second": step_tokens / max(seconds, 1e-9)}

    def state_dict(self) -> dict[str, int]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seen = int(state["seen"])


def ptx_batches(cfg, tokenizer, rank: int, world: int) -> Callable[[int], ResponseBatch]:
    """PPO-ptx data: ``fn(index)`` gives this process's share of pretraining batch ``index``."""
    data = replace(cfg.data, train=cfg.ppo.ptx_data, eval="", eval_size=0.0, format="auto", max_rows=0)
    rows, _ = load_tokenized(data, tokenizer, seed=cfg.train.seed, need="responses", method=f"{cfg.method} ptx")
    examples = [best_response_only(ex) for ex in rows]

    def batch(index: int) -> ResponseBatch:
        indices = global_batch_indices(len(examples), cfg.ppo.ptx_batch_size * world, index, cfg.train.seed + 1)
        return collate([examples[i] for i in indices[rank::world]])

    return batch


def save_final(module, tokenizer, out_dir: Path, state: dict[str, Tensor] | None = None,
               save_merged: bool = False) -> None:
    """The policy in HF format (a LoRA policy as its adapter; see ``save_pretrained``), the critic beside it.

    ``state``: the whole :class:`ActorCritic` state dict gathered from FSDP / ZeRO-3 shards, whose
    parameters the module itself then holds only in part."""
    save_pretrained(module.policy, tokenizer, out_dir, save_merged, state_dict=sub_state_dict(state, "scorer.lm."))
    critic, prefix = (module.value_head, "value_head.") if module.value_head is not None else (module.critic, "critic.")
    if critic is not None:
        weights = sub_state_dict(state, prefix) or critic.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(out_dir / "value_model.safetensors"))


@method_family
def rl_methods() -> dict[str, MethodSpec]:
    """Every algorithm of :data:`ALGORITHMS` is a method; a step takes ``ppo.num_minibatches`` batches of prompts."""
    shape = StepShape(batches_per_step=lambda cfg: cfg.ppo.num_minibatches)
    return {name: MethodSpec(name, "rl", train_rl, data="prompts", uses=name, needs_reference=True, step_shape=shape,
                             check=check_config, sections=("reference", "engine", "rewards", "sampling", "ppo")) for name in ALGORITHMS}
