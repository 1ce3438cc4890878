"""Sampling-based alignment as ONE loop: RAFT, RSO, online RRHF / PRO / listwise DPO, iterative DPO.

Stage ``n`` of every method (``online.stages`` of them):

1. draw ``online.prompts_per_stage`` prompts of ``data.train`` (any format; seed ``train.seed + n``;
   only the prompts the stages draw are tokenized first: :mod:`alignkit.train.prompts`);
2. gather candidates from ``online.sources``: K samples of the policy (or of
   ``online.sampler_model``), K samples of another model, the data row's own responses;
3. score them with ``rewards`` (with ``online.kl_beta`` > 0 also the log-probs of the
   policy and of the starting policy, for RAFT eq. 5);
4. select with the method's function in :data:`~alignkit.train.selection.SELECTORS`;
5. write ``output_dir/stages/stage-n/samples.jsonl`` BEFORE training: per prompt
   ``{prompt, responses, scores, kept, sources, prompt_ids, response_ids[, logps, ref_logps]}``,
   the ``ranked`` data format plus token ids, so the file also reads as training data;
6. fine-tune with :func:`~alignkit.train.loop.train_loop` (``SFTMethod``, or ``PreferenceMethod``
   with ``online.loss``) for ``train.num_epochs`` (or ``train.max_steps``); the model goes to
   ``stage-n/final`` and the steps to ``stage-n/metrics.jsonl``.

Resume (``train.resume: true``): a stage whose ``final/`` exists is skipped; a stage whose
``samples.jsonl`` exists is not sampled again (its selection, seeded, is recomputed); the
fine-tuning resumes from the stage's own checkpoints (``train.save_every``). Without
resume, the ``stages/`` of an earlier run are removed first.

``output_dir/metrics.jsonl`` gets one line per stage (field ``stage``): the mean reward of
all samples, the best-of-K mean, the kept samples' mean reward and distinct-2, the last
train loss. Under ``accelerate launch`` each process samples, scores and (for eq. 5) evaluates
its own contiguous block of the stage's prompts, with its own seed; the blocks are gathered back
in prompt order, so every process selects from the same candidates; the main one writes files.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from alignkit.config import Config
from alignkit.config.ranges import check_sampling_temperature
from alignkit.distributed import (
    full_weights,
    gather_objects,
    lockstep_batches,
    rank,
    shard,
    sharded_across_processes,
)
from alignkit.errors import AlignkitError, ConfigError
from alignkit.train.candidates import Candidates, read_jsonl, write_jsonl
from alignkit.train.methods import MethodSpec, StepShape, method_family
from alignkit.train.prompts import PromptRow, draw, load_prompts
from alignkit.train.selection import SELECTORS, Item, filter_mask, kl_regularised
from alignkit.train.updates import Update, all_updates, get_update

log = logging.getLogger("alignkit")


class ModelSource:
    """K samples of a model per prompt; a model with another vocabulary is re-tokenized for the policy.

    ``sampler`` has the call shape of :func:`alignkit.engine.generation.sample` (the default), e.g. a
    sampler of :mod:`alignkit.engine.backends`. ``owner``: the prepared module that holds ``model``'s
    weights (the policy's scorer), whose FSDP root weights are gathered while it samples.
    """

    def __init__(self, name: str, model, tokenizer, policy_tokenizer, tok_cfg, sampler=None, owner=None):
        from alignkit.engine.generation import sample

        self.name, self.model, self.tokenizer, self.policy_tokenizer = name, model, tokenizer, policy_tokenizer
        self.same_vocab = tokenizer.get_vocab() == policy_tokenizer.get_vocab()
        self.tok_cfg, self.sampler, self.owner = tok_cfg, sampler or sample, owner

    def propose(self, rows: list[PromptRow], sampling, progress: bool):
        from alignkit.data.schema import Example
        from alignkit.data.tokenize import tokenize_example

        prompt_ids = [r.prompt_ids if self.same_vocab else
                      tokenize_example(Example(r.prompt), self.tokenizer, self.tok_cfg).prompt_ids for r in rows]
        with full_weights(self.owner if self.owner is not None else self.model):
            out = self.sampler(self.model, self.tokenizer, prompt_ids, sampling, progress=progress)
        ids = out.response_ids if self.same_vocab else [[self._policy_ids(t, r) for t, r in zip(ts, rs)]
                                                        for ts, rs in zip(out.texts, out.response_ids)]
        return out.texts, ids, out.metrics

    def _policy_ids(self, text: str, ids: list[int]) -> list[int]:
        eos = self.policy_tokenizer.eos_token_id
        ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
        return self.policy_tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if ended or not text else [])


def gather(sources: list[ModelSource | None], rows: list[PromptRow], sampling, progress: bool = False):
    """The :class:`Candidates` of ``rows`` from every source in order (``None`` is the dataset source), and
    the generation metrics of the first model source."""
    responses, response_ids, names = [[] for _ in rows], [[] for _ in rows], [[] for _ in rows]
    metrics: dict[str, float] = {}
    for src in sources:
        if src is None:
            texts, ids, name = [r.responses for r in rows], [r.response_ids for r in rows], "dataset"
        else:
            texts, ids, gen = src.propose(rows, sampling, progress)
            metrics, name = metrics or gen, src.name
        for b, (ts, rs) in enumerate(zip(texts, ids)):
            responses[b] += ts
            response_ids[b] += rs
            names[b] += [name] * len(ts)
    return Candidates.new([r.prompt for r in rows], [r.prompt_ids for r in rows], responses, response_ids,
                          names), metrics


def score_candidates(reward, candidates: Candidates) -> None:
    """Set ``candidates.scores``: the reward of each response; a pairwise judge (``kind: preference_model``)
    scores each prompt's candidates together (:meth:`~alignkit.rewards.preference.PreferenceJudge.group_scores`)."""
    from alignkit.rewards import as_text
    from alignkit.rewards.preference import PreferenceJudge

    if isinstance(reward, PreferenceJudge):
        candidates.set_values("scores", [reward.group_scores(as_text(p), [as_text(r) for r in rs])
                                         for p, rs in zip(candidates.prompts, candidates.responses)])
        return
    cells = candidates.cells()
    flat = reward.score([as_text(candidates.prompts[b]) for b, _ in cells],
                        [as_text(candidates.responses[b][k]) for b, k in cells]).tolist()
    rows = []
    for n in candidates.counts():
        rows, flat = rows + [[float(s) for s in flat[:n]]], flat[n:]
    candidates.set_values("scores", rows)


@torch.no_grad()
def candidate_logps(logps_fn, candidates: Candidates, batch_size: int, lockstep: bool = False) -> list[list[float]]:
    """``logps_fn(ResponseBatch) -> [B, K]`` over every prompt's candidates, in batches of prompts;
    under ``lockstep`` (sharded weights) as many batches as the busiest process, padded with throw-aways."""
    from alignkit.data.schema import TokenizedExample
    from alignkit.engine import collate

    out = []
    for chunk in lockstep_batches(list(range(len(candidates))), batch_size, lockstep):
        examples = [TokenizedExample(candidates.prompt_ids[b], candidates.response_ids[b]) for b in chunk]
        values = logps_fn(collate(examples or [TokenizedExample([0], [[0]])])).cpu()
        out += [values[i, : len(candidates.response_ids[b])].tolist() for i, b in enumerate(chunk)]
    return out


def select(method: str, candidates: Candidates, cfg: Config, stage: int, filter_fn=None) -> list[Item]:
    """Filter, rank (eq. 5 when ``online.kl_beta`` > 0) and hand the candidates to the method's selector;
    sets ``candidates.kept``. The selector sees the ranking scores and the filtered mask as float32 ``scores``
    and ``mask``, and everything else of the candidates (texts, ids, sources, log-probs)."""
    from alignkit.rewards import as_text

    scores, mask = candidates.scores.float(), candidates.mask.clone()
    if filter_fn is not None:
        cells = candidates.cells()
        keep = filter_mask(filter_fn, [as_text(candidates.prompts[b]) for b, _ in cells],
                           [as_text(candidates.responses[b][k]) for b, k in cells], [float(scores[c]) for c in cells])
        for (b, k), ok in zip(cells, keep.tolist()):
            mask[b, k] &= ok
    if cfg.online.kl_beta > 0:
        scores = kl_regularised(scores, candidates.logps.float(), candidates.ref_logps.float(), cfg.online.kl_beta)
    view = replace(candidates, scores=scores, mask=mask)
    items = SELECTORS[method].select(view, cfg.online, random.Random(cfg.train.seed * 1_000_003 + stage))
    candidates.kept = torch.zeros_like(candidates.mask)
    for it in items:
        candidates.kept[it.row, it.indices] = True
    return items


def to_examples(candidates: Candidates, items: list[Item], stage: int, sft: bool):
    from alignkit.data.schema import TokenizedExample
    from alignkit.train.sft import best_response_only

    out = [TokenizedExample(candidates.prompt_ids[it.row], [candidates.response_ids[it.row][k] for k in it.indices],
                            it.scores, None, f"stage-{stage}:{it.row}") for it in items]
    return [best_response_only(ex) for ex in out] if sft else out


def stage_metrics(candidates: Candidates) -> dict[str, float]:
    """Mean reward of all samples, of the best per prompt (best-of-K) and of the kept ones; kept distinct-2."""
    from alignkit.eval.metrics import distinct_n
    from alignkit.rewards import as_text

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    scores = candidates.values("scores")
    kept = [(candidates.responses[b][k], scores[b][k]) for b, k in candidates.cells() if candidates.kept[b, k]]
    return {
        "reward/mean": mean([s for row in scores for s in row]),
        "reward/best_of_k": mean([max(row) for row in scores if row]),
        "reward/kept": mean([s for _, s in kept]),
        "kept/count": len(kept),
        "kept/distinct_2": distinct_n([as_text(x) for x, _ in kept], 2),
        "samples/count": sum(len(row) for row in scores),
    }


# ---------------------------------------------------------------- the trainer


def check_config(cfg: Config) -> tuple[Update, Any]:
    """The stage's update and the filter function; every config error before any model loads."""
    o = cfg.online
    check_sampling_temperature(cfg)
    if not cfg.rewards:
        raise ConfigError(f"rewards: method {cfg.method!r} scores its samples with a reward; add one, "
                          "e.g. `rewards: [{kind: vader}]`")
    if cfg.loss:
        raise ConfigError(f"loss: method {cfg.method!r} takes its update's hyper-parameters from online.loss_args")
    if o.stages < 1 or o.prompts_per_stage < 0:
        raise ConfigError("online.stages must be >= 1 and online.prompts_per_stage >= 0")
    if not o.sources or len(set(o.sources)) < len(o.sources):
        raise ConfigError(f"online.sources: give distinct sources (policy, dataset or a model path), got {o.sources}")
    selector = SELECTORS[cfg.method]
    update = get_update(o.loss or selector.default_update, o.loss_args)
    if selector.check is not None:
        selector.check(o, update.name)
    if not o.filter:
        return update, None
    from alignkit.rewards.simple import import_function

    try:
        return update, import_function(o.filter)
    except AlignkitError as err:
        raise ConfigError(f"online.filter: {err}") from None


def train_sampling(cfg: Config) -> Path:
    from alignkit.engine import SequenceScorer, sequence_logps
    from alignkit.models.reference import FrozenReference, copy_of
    from alignkit.rewards import build_reward
    from alignkit.train.accelerator import make_accelerator
    from alignkit.train.build import policy_saver
    from alignkit.train.loop import train_loop
    from alignkit.train.runtime import save_final

    update, filter_fn = check_config(cfg)
    o, out = cfg.online, Path(cfg.train.output_dir)
    reward = build_reward(cfg.rewards)
    accelerator = make_accelerator(cfg.train)
    main, device = accelerator.is_main_process, accelerator.device
    start = _completed_stages(out, o.stages, cfg.train.resume, accelerator)
    policy, tokenizer = load_model(cfg, str(stage_dir(out, start - 1) / "final") if start else "", lora=True)
    policy.to(device)
    pad, share, chunk = tokenizer.pad_token_id, cfg.engine.share_prompt, cfg.engine.chunk_size
    rows = load_prompts(cfg, tokenizer, with_responses="dataset" in o.sources, stages=range(start, o.stages))
    scorer = SequenceScorer(policy, chunk)  # prepared (and under FSDP sharded) by the first stage's loop
    ref_mode = o.reference if o.reference != "auto" else SELECTORS[cfg.method].reference
    loss_ref = update.needs_reference
    initial = None
    if o.kl_beta > 0 or (loss_ref and ref_mode == "initial") or set(REFERENCE_SOURCES) & set(o.sources):
        first = copy_of(policy) if start == 0 and not cfg.reference.path else load_model(cfg, cfg.reference.path)[0]
        initial = FrozenReference(first, pad, share, chunk).to(device)
    sources = _sources(cfg, policy, tokenizer, device, owner=scorer,
                       reference=initial.scorer.lm if initial is not None else None)

    def policy_logps(batch):
        scorer.eval()
        return sequence_logps(scorer, batch, pad_id=pad, share_prompt=share).logps

    for stage in range(start, o.stages):
        sdir = stage_dir(out, stage)
        accelerator.wait_for_everyone()
        fresh = not (sdir / "samples.jsonl").is_file()
        if fresh:
            logps_fns = {"logps": policy_logps, "ref_logps": initial.logps} if o.kl_beta > 0 else {}
            candidates, gen = sample_stage(cfg, stage, sources, rows, reward, logps_fns, cfg.train.progress and main,
                                           lockstep=sharded_across_processes(scorer))
        else:
            candidates, gen = Candidates.read(sdir / "samples.jsonl"), {}
        items = select(cfg.method, candidates, cfg, stage, filter_fn)
        if fresh and main:
            candidates.write(sdir / "samples.jsonl")
        examples = to_examples(candidates, items, stage, sft=update.best_response_only)
        reference = None
        if loss_ref:
            previous = (load_model(cfg, str(stage_dir(out, stage - 1) / "final"))[0]  # whole, from disk
                        if ref_mode == "previous" and sharded_across_processes(scorer) else copy_of(policy))
            reference = initial if ref_mode == "initial" else FrozenReference(previous, pad, share, chunk)
            reference.to(device)
        method = update.build(o.loss_args, pad, reference, share)
        record = {"stage": stage, **stage_metrics(candidates), **gen, "train/examples": len(examples)}
        if examples:
            stage_cfg = replace(cfg.train, output_dir=str(sdir), seed=cfg.train.seed + stage)
            result = train_loop(stage_cfg, method, scorer, examples, accelerator=accelerator,
                                on_save=policy_saver(tokenizer), desc=f"{cfg.method} {stage + 1}/{o.stages}")
            record["train/loss"] = result.history[-1].get("loss") if result.history else None
            accelerator.free_memory()  # drop this stage's optimizer
        else:
            log.warning("stage %d: nothing selected (all candidates tied or filtered); the policy is unchanged", stage)
            save_final(accelerator, scorer, sdir / "final", policy_saver(tokenizer))
        log.info("stage %d: %s", stage, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)))
        if main and o.keep_stage_models > 0:
            drop_stage_weights(out, stage - max(o.keep_stage_models, 1))
        if main:
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
    save_final(accelerator, scorer, out / "final", policy_saver(tokenizer, cfg.model.lora.save_merged))
    return out


def sample_stage(cfg: Config, stage: int, sources, rows, reward, logps_fns, progress: bool, lockstep: bool = False):
    """Draw the stage's prompts, gather and score their candidates; ``logps_fns`` maps a record key to a
    ``ResponseBatch -> [B, K]`` log-prob function (RAFT eq. 5 needs log pi and log pi_ref).

    Data parallel: this process does its block of the prompts (seed offset by its rank, so the
    blocks are independent draws; one process reproduces the seed ``sampling.seed + stage``);
    every process returns all candidates, in the order of the draw, and the generation metrics
    of all processes (throughput summed, time the slowest process's). ``lockstep``: the policy's
    weights are sharded, so a process without prompts still joins every forward."""
    prompts = draw(rows, cfg.online.prompts_per_stage, cfg.train.seed + stage)
    mine = shard(prompts)
    candidates, gen = Candidates.new([], [], [], [], []), {}
    if mine or lockstep:
        sampling = replace(cfg.sampling, seed=cfg.sampling.seed + stage + 1_000_003 * rank())
        candidates, gen = gather(sources, mine, sampling, progress)
        gen = gen if mine else {}
        if len(candidates):
            score_candidates(reward, candidates)
        for key, fn in logps_fns.items():
            candidates.set_values(key, candidate_logps(fn, candidates, cfg.train.batch_size, lockstep))
    return Candidates.concat(gather_objects([candidates])), merge_generation_metrics(gather_objects([gen]))


def merge_generation_metrics(per_process: list[dict[str, float]]) -> dict[str, float]:
    """One process's generation metrics from every process's: the data-parallel throughput is the sum of
    theirs, the stage waits for the slowest, and the mean length is weighted by tokens."""
    parts = [m for m in per_process if m]
    if len(parts) <= 1:
        return parts[0] if parts else {}
    seconds = [m["gen/seconds"] for m in parts]
    tokens = [m["gen/tokens_per_s"] * s for m, s in zip(parts, seconds)]
    responses = [t / max(m["gen/mean_length"], 1e-9) for m, t in zip(parts, tokens)]
    return {"gen/tokens_per_s": sum(m["gen/tokens_per_s"] for m in parts), "gen/seconds": max(seconds),
            "gen/mean_length": sum(tokens) / max(sum(responses), 1e-9), "gen/processes": float(len(parts))}


def drop_stage_weights(out: Path, last: int) -> None:
    """Remove the weights of the full models of stages ``0..last`` (``online.keep_stage_models``); their
    samples, metrics and tokenizer stay, so the stages still count as done. Adapters are kept."""
    for stage in range(last + 1):
        final = stage_dir(out, stage) / "final"
        if (final / "adapter_config.json").is_file():
            continue
        for weights in final.glob("*.safetensors"):
            weights.unlink()


def stage_dir(out: Path, stage: int) -> Path:
    return Path(out) / "stages" / f"stage-{stage}"


def _completed_stages(out: Path, stages: int, resume: bool, accelerator) -> int:
    """Stages already fine-tuned (on resume), after removing an earlier run's stages (without resume);
    ``metrics.jsonl`` keeps the lines of the completed stages."""
    if accelerator.is_main_process and not resume and (out / "stages").exists():
        log.info("starting over: removing %s (set train.resume=true to continue it)", out / "stages")
        shutil.rmtree(out / "stages")
    accelerator.wait_for_everyone()
    done = 0
    while done < stages and (stage_dir(out, done) / "final" / "tokenizer_config.json").is_file():  # saved last
        done += 1
    metrics = out / "metrics.jsonl"
    kept = [r for r in read_jsonl(metrics) if r.get("stage", stages) < done] if done and metrics.is_file() else []
    if accelerator.is_main_process:
        write_jsonl(metrics, kept)
    return done


def load_model(cfg: Config, path: str = "", lora: bool = False):
    """A model of the run: ``cfg.model`` at another path (empty: its own), with its LoRA adapter only if ``lora``."""
    from alignkit.models.loading import load_causal_lm

    model_cfg = replace(cfg.model, name_or_path=path or cfg.model.name_or_path)
    if not lora:
        model_cfg = replace(model_cfg, lora=type(cfg.model.lora)())
    return load_causal_lm(model_cfg)


REFERENCE_SOURCES = ("reference", "mixture")  # sources that sample the starting policy (alone or mixed)


def _sources(cfg: Config, policy, tokenizer, device, owner=None, reference=None) -> list[ModelSource | None]:
    """The candidate sources of ``online.sources``: a model (policy, sampler or another one), None (dataset),
    the starting policy ``reference`` (source ``reference``) or its token-level geometric mixture with the
    policy (source ``mixture``, weight ``online.mixture_coef`` on the reference: Nash-MD)."""
    from alignkit.data.pipeline import tokenize_config
    from alignkit.engine.backends import sampler_for
    from alignkit.engine.mixture import mixture_sampler, with_own_seeds

    tok_cfg = tokenize_config(cfg.data)
    out: list[ModelSource | None] = []
    for name in cfg.online.sources:
        if name == "dataset":
            out.append(None)
        elif name == "reference":
            sampler = with_own_seeds(sampler_for(cfg.sampling, device, cfg.reference.path or cfg.model.name_or_path))
            out.append(ModelSource("reference", reference, tokenizer, tokenizer, tok_cfg, sampler))
        elif name == "mixture":
            sampler = mixture_sampler(reference, cfg.online.mixture_coef)
            out.append(ModelSource("mixture", policy, tokenizer, tokenizer, tok_cfg, sampler, owner))
        elif name == "policy" and not cfg.online.sampler_model:
            sampler = sampler_for(cfg.sampling, device, cfg.model.name_or_path)
            out.append(ModelSource("policy", policy, tokenizer, tokenizer, tok_cfg, sampler, owner))
        else:
            path = cfg.online.sampler_model if name == "policy" else name
            model, tok = load_model(cfg, path)
            sampler = sampler_for(cfg.sampling, device, path)
            out.append(ModelSource(path, model.to(device).requires_grad_(False), tok, tokenizer, tok_cfg, sampler))
    return out


@method_family
def sampling_methods() -> dict[str, MethodSpec]:
    """Every selector of :data:`SELECTORS` is a method; ``train.max_steps`` counts the steps of one stage."""
    shape = StepShape(stages=lambda cfg: max(cfg.online.stages, 1))
    updates = all_updates()
    return {name: MethodSpec(name, "sampling", train_sampling, data="prompts", uses=name, step_shape=shape,
                             needs_reference=updates[spec.default_update].needs_reference,
                             default_update=spec.default_update, check=check_config, paper=spec.paper,
                             sections=("reference", "engine", "rewards", "sampling", "online"))
            for name, spec in SELECTORS.items()}
