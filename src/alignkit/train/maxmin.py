"""``method: maxmin_reward_models``: MaxMin-RLHF's mixture of H reward models, learned by EM from
preferences whose annotators belong to unknown groups (Chakraborty et al. 2024, arXiv 2402.08925,
sec. 4.1 and Algorithm 1).

1. Init: one Bradley-Terry reward model on all pairs (``mixture.init_steps``), saved as ``pooled/``:
   the single-reward baseline. Annotators are ranked by their mean pair log-likelihood under it and
   cut into H runs (:func:`~alignkit.losses.reward_mixture.quantile_init`); every group model starts as a
   copy of the pooled one.
2. M-step: each group's reward model continues its Bradley-Terry fit on the pairs of the annotators
   assigned to it (``mixture.m_step_steps`` optimizer steps).
3. E-step: every pair is scored by every group model; each annotator goes to the group with the
   highest log-likelihood of its preferences (hard, as in the paper's algorithm; the math is in
   :mod:`alignkit.losses.reward_mixture`).
4. Repeat 2-3 until no assignment changes, at most ``mixture.em_iterations`` rounds.

Each fit (1 and every M-step) is a run of the shared training loop on the one runtime
(:func:`fit_bradley_terry`): the ``train:`` section applies to each, with its own log under ``fits/``.
The EM does not checkpoint or resume (``train.resume`` and ``train.save_every`` are refused).

The owner of a pair is its ``annotator`` (a pairwise-data column); data without annotator ids assigns
each pair by itself. With a ``group`` column (the truth) the clustering accuracy is reported.

Out, under ``train.output_dir``: ``final/group_0 .. group_{H-1}`` and ``final/pooled`` (reward models,
centred on the training responses, with their std there; ``kind: min`` of ``rewards:`` reads ``final/``),
``final/mixture.json`` (assignments, group sizes, the truth each group matches, accuracies) and
``metrics.jsonl`` (one record per EM round), ``fits/<fit>/metrics.jsonl`` (each fit's steps). A single process
trains; the models are reward-model sized.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.schema import Example
from alignkit.errors import ConfigError, DataError
from alignkit.losses.reward_mixture import (
    clustering_accuracy,
    hard_assignments,
    owner_log_likelihoods,
    pair_log_likelihoods,
    quantile_init,
)
from alignkit.train.methods import MethodSpec, register_method
from alignkit.train.reward_model import RewardModelMethod

log = logging.getLogger("alignkit")
PAPER = "Chakraborty et al. 2024 (MaxMin-RLHF, arXiv 2402.08925)"


def owners_of(examples: Sequence[Example]) -> tuple[torch.Tensor, list[str], list[str] | None]:
    """Each pair's owner ``[N]`` (an index into the owner names), the names, and each owner's true group
    (``None`` unless every pair has a ``group``). Owners are the annotators when every pair has one,
    else the pairs themselves."""
    if all("annotator" in ex.meta for ex in examples):
        names = list(dict.fromkeys(str(ex.meta["annotator"]) for ex in examples))
        index = {name: i for i, name in enumerate(names)}
        owner = torch.tensor([index[str(ex.meta["annotator"])] for ex in examples], dtype=torch.long)
    else:
        names = [ex.source or str(i) for i, ex in enumerate(examples)]
        owner = torch.arange(len(examples))
    truth = None
    if all("group" in ex.meta for ex in examples):
        truth = [""] * len(names)
        for ex, o in zip(examples, owner.tolist()):
            group = str(ex.meta["group"])
            if truth[o] and truth[o] != group:
                raise DataError(f"{ex.source}: annotator {names[o]!r} is in group {group!r} here and in "
                                f"{truth[o]!r} elsewhere; an annotator belongs to one group")
            truth[o] = group
    return owner, names, truth


def fit_bradley_terry(cfg, method: RewardModelMethod, model, examples: Sequence[Example], steps: int,
                      out_dir: Path, accelerator) -> float:
    """``steps`` optimizer steps of the reward loss on ``examples``, continuing from ``model``'s weights: one
    run of the project's runtime (:func:`~alignkit.train.loop.train_loop`: the ``train:`` section's optimizer,
    schedule, clipping, accumulation and precision, over seeded permutations of ``examples``), logged in
    ``out_dir/metrics.jsonl``. Its optimizer starts afresh, as in the paper's refit. Returns the last loss."""
    from alignkit.train.guard import Preempted
    from alignkit.train.loop import train_loop

    fit_cfg = dataclasses.replace(cfg, max_steps=steps, output_dir=str(out_dir), eval_every=0, save_every=0,
                                  resume=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = train_loop(fit_cfg, method, model, examples, accelerator=accelerator, desc=out_dir.name)
    except Preempted as stop:
        raise Preempted(f"{stop}; but an EM run (method maxmin_reward_models) does not resume: run it again "
                        "with train.overwrite=true", stop.exit_code - 128) from None
    model.eval()
    return result.history[-1]["loss"] if result.history else float("nan")


@torch.no_grad()
def pair_rewards(method: RewardModelMethod, model, examples: Sequence[Example], batch_size: int) -> torch.Tensor:
    """``[N, 2]``: the reward of each pair's chosen (column 0) and rejected response."""
    model.eval()
    out = [method.rewards(model, examples[i : i + batch_size])[0][:, :2].float().cpu()
           for i in range(0, len(examples), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 2)


def group_pair_rewards(method, models: list, examples: Sequence[Example], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``chosen``, ``rejected`` ``[N, H]``: every pair under every group's reward model."""
    scored = [pair_rewards(method, m, examples, batch_size) for m in models]  # H x [N, 2]
    return torch.stack([s[:, 0] for s in scored], 1), torch.stack([s[:, 1] for s in scored], 1)


def heldout_accuracy(method, models: list, assign: torch.Tensor, names: list[str], pooled, held_out, batch_size):
    """Held-out pair accuracy of the pooled model, and of the mixture (each pair scored by its annotator's
    group model; pairs of annotators unseen in training are left out of both)."""
    index = {name: i for i, name in enumerate(names)}
    seen = [ex for ex in held_out if str(ex.meta.get("annotator")) in index]
    if not seen:
        return {}
    chosen, rejected = group_pair_rewards(method, models, seen, batch_size)
    group = assign[[index[str(ex.meta["annotator"])] for ex in seen]]
    mine = torch.arange(len(seen))
    pooled_r = pair_rewards(method, pooled, seen, batch_size)
    return {"heldout_pairs": len(seen),
            "heldout_accuracy_mixture": float((chosen[mine, group] > rejected[mine, group]).float().mean()),
            "heldout_accuracy_pooled": float((pooled_r[:, 0] > pooled_r[:, 1]).float().mean())}


def em_record(round_: int, owner_ll: torch.Tensor, assign: torch.Tensor, changed: int, owner: torch.Tensor,
              truth_ids: torch.Tensor | None) -> dict:
    """What one EM round logs."""
    record = {"round": round_, "changed": changed,
              "loglik_per_pair": float(owner_ll.gather(1, assign[:, None]).sum() / max(len(owner), 1)),
              **{f"group_{h}/owners": int((assign == h).sum()) for h in range(owner_ll.shape[1])}}
    if truth_ids is not None:
        record["clustering_accuracy"] = clustering_accuracy(assign, truth_ids)
        record["clustering_accuracy_pairs"] = clustering_accuracy(assign[owner], truth_ids[owner])
    return record


def train_mixture(cfg) -> Path:
    from alignkit.data.pipeline import load_split
    from alignkit.models.reward_model import compute_center_and_std, load_reward_model, save_reward_model
    from alignkit.rewards.base import as_text
    from alignkit.train.accelerator import make_accelerator

    mix, rm_cfg, tcfg = cfg.mixture, cfg.reward_model, cfg.train
    accelerator = make_accelerator(tcfg)  # seeds first: the fresh head; every fit of the EM runs on it
    train, held_out = load_split(cfg.data, seed=tcfg.seed, need="preferences", method=cfg.method)
    train = [ex for ex in train if len(set(ex.scores)) > 1]
    owner, names, truth = owners_of(train)
    if len(names) < mix.num_groups:
        raise DataError(f"{cfg.data.train}: {len(names)} annotators (or pairs) for mixture.num_groups="
                        f"{mix.num_groups}; give more data or fewer groups")
    truth_names = sorted(set(truth)) if truth else []
    truth_ids = torch.tensor([truth_names.index(t) for t in truth]) if truth else None
    pooled, tokenizer = load_reward_model(cfg.model.name_or_path, kind=rm_cfg.kind,
                                          trust_remote_code=cfg.model.trust_remote_code)
    pooled.to(accelerator.device).max_length = rm_cfg.max_length
    method = RewardModelMethod(tokenizer, rm_cfg.loss, cfg.loss, rm_cfg.max_length)
    out = Path(tcfg.output_dir)
    fits = out / "fits"  # each fit's own metrics.jsonl; an earlier EM's (overwrite) would mix with this one's
    shutil.rmtree(fits, ignore_errors=True)
    metrics_file = (out / "metrics.jsonl").open("w")

    # 1. init: the pooled reward, and annotators split by how well it explains them
    loss = fit_bradley_terry(tcfg, method, pooled, train, mix.init_steps, fits / "pooled", accelerator)
    pooled_ll = pair_log_likelihoods(*pair_rewards(method, pooled, train, tcfg.batch_size).T)  # [N]
    counts = torch.bincount(owner, minlength=len(names)).clamp(min=1)
    assign = quantile_init(owner_log_likelihoods(pooled_ll[:, None], owner, len(names))[:, 0] / counts,
                           mix.num_groups)
    log.info("mixture: pooled reward model trained (loss %.4f); %d owners in %d groups", loss, len(names),
             mix.num_groups)
    models = [copy.deepcopy(pooled) for _ in range(mix.num_groups)]
    history, converged = [], False
    for round_ in range(1, mix.em_iterations + 1):
        # 2. M-step: refit each group's reward on its owners' pairs
        for h, model in enumerate(models):
            mine = [ex for ex, o in zip(train, owner.tolist()) if assign[o] == h]
            if mine:
                fit_bradley_terry(tcfg, method, model, mine, mix.m_step_steps, fits / f"round_{round_}_group_{h}",
                                  accelerator)
        # 3. E-step: each owner to the group that explains its preferences best
        owner_ll = owner_log_likelihoods(pair_log_likelihoods(*group_pair_rewards(method, models, train,
                                                                                  tcfg.batch_size)),
                                         owner, len(names))
        new = hard_assignments(owner_ll)
        changed = int((new != assign).sum())
        assign = new
        record = em_record(round_, owner_ll, assign, changed, owner, truth_ids)
        history.append(record)
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        log.info("mixture round %d: %s", round_, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                        for k, v in record.items() if k != "round"))
        if changed == 0:
            converged = True
            break
    metrics_file.close()

    # 4. save every reward model, centred on the training responses (0 = an average starting response), with its
    # spread there (kind: min's scale: std divides by it, so that groups are compared in like units)
    final = out / "final"
    ref = train[: max(rm_cfg.center_examples, 1)]
    prompts = [as_text(ex.prompt) for ex in ref for _ in ex.responses]
    responses = [as_text(r) for ex in ref for r in ex.responses]
    for name, model in [*((f"group_{h}", m) for h, m in enumerate(models)), ("pooled", pooled)]:
        center, spread = (compute_center_and_std(model, tokenizer, prompts, responses, tcfg.batch_size,
                                                 rm_cfg.max_length) if rm_cfg.center_examples > 0 else (0.0, 1.0))
        save_reward_model(model, tokenizer, final / name, center_mean=center, center_std=spread)
    summary = {
        "paper": PAPER, "num_groups": mix.num_groups, "rounds": len(history), "converged": converged,
        "owners": {name: int(g) for name, g in zip(names, assign)},
        "group_pairs": [int((assign[owner] == h).sum()) for h in range(mix.num_groups)],
        "history": history,
        **heldout_accuracy(method, models, assign, names, pooled, held_out, tcfg.batch_size),
    }
    if truth:
        summary["clustering_accuracy"] = history[-1]["clustering_accuracy"] if history else float("nan")
        summary["truth"] = {name: t for name, t in zip(names, truth)}
        summary["group_truth"] = [Counter(t for t, g in zip(truth, assign.tolist()) if g == h).most_common(1)[0][0]
                                  if (assign == h).any() else "" for h in range(mix.num_groups)]
    (final / "mixture.json").write_text(json.dumps(summary, indent=1) + "\n")
    return out


def check_config(cfg) -> None:
    from alignkit.losses import check_hyperparameters

    check_hyperparameters(cfg.reward_model.loss, cfg.loss)
    for key in ("resume", "save_every"):
        if getattr(cfg.train, key):
            raise ConfigError(f"train.{key}: method 'maxmin_reward_models' does not checkpoint or resume (its EM is "
                              "many short fits, each from the last; the result is final/); remove it")


register_method(MethodSpec("maxmin_reward_models", "reward_model", train_mixture, data="pairs", check=check_config,
                           sections=("loss", "reward_model", "mixture"), paper=PAPER))
