"""``alignkit eval``: sample from a model and measure it the way RAFT's Table 3 does, and more.

What is measured, and how (``eval.json`` holds every number; ``samples.jsonl`` every sample):

- **Reward**: each reward of ``rewards`` on ``sampling.num_samples`` samples per prompt at
  ``sampling.temperature``, and its diagnostics (a fine-grained reward model's ``error_rate``,
  Fine-Grained RLHF's per-category error rate, as ``NAME/error_rate``). Mean over all samples; the standard error is taken over
  prompts (the per-prompt mean rewards), since samples of one prompt are not independent.
- **Best-of-k**, k = 1, 2, 4, ..., K (``best_of_k``): the expected reward of the sample that
  ``best_of_k_reward`` ranks first among k samples, estimated without bias from K samples
  per prompt: of K samples sorted by that reward, the i-th lowest is the best of a random
  k-subset with probability ``C(i-1, k-1) / C(K, k)`` (see :func:`best_of_k_curve`). Every
  reward is reported at the selected sample.
- **KL(pi || pi_ref)** on the model's own samples: per sample ``sum_t log pi(y_t | x, y_<t) -
  log pi_ref(y_t | x, y_<t)`` from the engine's per-token log-probs under both models; the
  mean over samples ± s.e. over prompts, and per token. At a temperature other than 1 the
  samples are not from pi, so this estimates the divergence of the sampler (as TRL and RAFT do).
- **Perplexity** of ``reference_responses`` (the best response of each row: the chosen
  response of pairs): ``exp(total NLL / total response tokens)``, NLL from the engine.
- **Diversity** as RAFT reports it: MSTTR-100, distinct-1/2, unique-1/2 over all samples,
  and the mean response length in words (see :mod:`alignkit.eval.metrics`).
- **Preference accuracy** on held-out pairs or rankings (``preference_data``): the share of
  ordered pairs that a score orders as the labels do. The policy's score is its implicit
  reward ``log pi(y|x) / pi_ref(y|x)`` (DPO family; the ``beta`` of ``beta * log ratio``
  does not change an order, so it is not needed), or ``log pi(y|x)`` for reference-free
  methods, or its length-normalised mean (SimPO); a ``reward_model`` is scored with
  ``reward_logits``.
- **Win rate** of each sample against its prompt's ``baseline`` response (the dataset's
  chosen response, or another model's outputs), judged by a reward (both sides scored,
  ties within ``tie_eps``) or by a ``module:function`` pairwise judge; wins, ties and
  losses are all reported.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from alignkit.config.rewards import RewardSpec
from alignkit.engine.generation import SamplingConfig
from alignkit.errors import ConfigError, DataError
from alignkit.eval import metrics as M
from alignkit.eval.sample_metrics import (
    best_of_k_curve,
    build_rewards,
    evaluate_texts,
    per_prompt_stats,
    powers_of_two,
    score_all,
)

log = logging.getLogger("alignkit")


@dataclass
class EvalConfig:
    model: str = ""  # the policy: a run's final/ folder, a saved model, a Hub id, or tiny-llama / tiny-gpt2
    reference: str = ""  # pi_ref for KL and the implicit reward, usually the starting model (empty: no KL)
    tokenizer: str = ""  # tokenizer path or id (empty: the model's own; the reference must share it)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weight dtype of the policy and reference
    prompts: str = ""  # data file whose prompts are sampled on (any format; alignkit:NAME for built-ins)
    max_prompts: int = 0  # use the first max_prompts prompts (0: all)
    held_out_size: float = 0.0  # sample only the prompts that a training run's data.eval_size=held_out_size
    # holds out of the prompts file (split by prompt, as span and K-wise reward models split), so that reward
    # models trained on that file judge questions they never saw; 0: every prompt
    held_out_seed: int = 0  # that training run's train.seed
    max_prompt_length: int = 0  # prompt tokens kept (the end of the prompt), below max_length (0: half of it)
    max_length: int = 1024  # prompt + response tokens when scoring reference responses and preference data
    max_rows: int = 0  # use the first max_rows rows of reference_responses and preference_data (0: all)
    chat_strings: bool = False  # render string rows (HH dialogues, prompt strings) with the chat template, as
    # data.chat_strings does in training (a chat model trained that way is sampled and scored the same way)
    rewards: list[RewardSpec] = field(default_factory=list)  # each is reported separately
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # samples per prompt, temperature, ...
    best_of_k: int = 0  # K: also report the reward of best-of-k for k = 1, 2, 4, ..., K (0: off)
    best_of_k_reward: str = ""  # name of the reward that picks the best sample (default: the first reward)
    reference_responses: str = ""  # data file whose best (chosen) responses measure perplexity
    preference_data: str = ""  # held-out pairs or rankings for preference accuracy
    implicit_reward: Literal["auto", "ratio", "logp", "mean_logp"] = "auto"  # policy score for preference
    # accuracy: ratio = log pi/pi_ref, logp = log pi, mean_logp = log pi per token; auto: ratio given a reference
    reward_model: str = ""  # a reward model folder also scored on preference_data (via reward_logits)
    baseline: str = ""  # win rate against: 'chosen' (best response of each prompts row) or a file of
    # prompt + response rows (response / completion / responses[0] / chosen), e.g. another model's samples.jsonl;
    # in `alignkit compare`, 'start': the start model's own samples (runs/start/samples.jsonl)
    judge: RewardSpec | str | None = None  # a reward spec scoring both sides (kind preference_model: P(response > baseline) > 1/2 wins), or 'module:function':
    # a pairwise judge fn(prompts, responses, baselines) -> N numbers (> 0: the response wins, < 0: loses, 0: tie)
    tie_eps: float = 0.0  # a reward judge calls |score difference| <= tie_eps a tie
    batch_size: int = 8  # prompts (rows) per forward pass of the log-prob engine
    output_dir: str = "runs/eval"  # eval.json and samples.jsonl go here
    progress: bool = True  # show progress bars


# ---------------------------------------------------------------- pure helpers


def json_safe(x: Any) -> Any:
    """NaN and inf become None (strict JSON); tensors become lists."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, torch.Tensor):
        return json_safe(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---------------------------------------------------------------- data


def load_rows(path: str, max_rows: int = 0):
    """Examples of any data format (``alignkit:NAME`` for built-ins)."""
    from alignkit.data.examples import load_examples
    from alignkit.data.pipeline import resolve_data_path

    return load_examples(resolve_data_path(path), max_rows=max_rows or None)


def load_prompt_rows(cfg: EvalConfig):
    """The rows of ``cfg.prompts`` sampled on: the held-out prompts only with ``held_out_size``, then
    the first ``max_prompts``."""
    from alignkit.data.spans import split_by_prompt

    if not cfg.held_out_size:
        return load_rows(cfg.prompts, cfg.max_prompts)
    _, held_out = split_by_prompt(load_rows(cfg.prompts), cfg.held_out_size, cfg.held_out_seed)
    return held_out[: cfg.max_prompts or None]


def tokenize(examples, tokenizer, cfg: EvalConfig):
    from alignkit.data.tokenize import TokenizeConfig, tokenize_examples

    tok_cfg = TokenizeConfig(max_prompt_length=cfg.max_prompt_length, max_length=cfg.max_length,
                             chat_strings=cfg.chat_strings)
    return tokenize_examples(examples, tokenizer, tok_cfg)


def load_baseline(cfg: EvalConfig, examples, prompts: list[str]) -> list[str | None]:
    """One baseline response per prompt (None where the baseline has none)."""
    from alignkit.data.loaders import BadRow, read_rows
    from alignkit.data.pipeline import resolve_data_path
    from alignkit.rewards.base import as_text
    from alignkit.rewards.score_file import row_texts

    if cfg.baseline == "chosen":
        if not any(ex.responses for ex in examples):
            raise ConfigError(f"baseline: 'chosen' needs responses in the prompts file {cfg.prompts}")
        return [as_text(ex.responses[ex.ranked()[0]]) if ex.responses else None for ex in examples]
    table: dict[str, str] = {}
    for row, location in read_rows(resolve_data_path(cfg.baseline)):
        if isinstance(row, BadRow):
            raise DataError(f"{location}: {row.reason}")
        prompt, responses = row_texts(row, location)
        if responses:
            table.setdefault(prompt, responses[0])
    found = [table.get(p) for p in prompts]
    if not any(r is not None for r in found):
        raise DataError(f"baseline: {cfg.baseline} has no response for any of the {len(prompts)} prompts")
    return found


# ---------------------------------------------------------------- model computations


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str, cfg: EvalConfig, tokenizer=None):
    from alignkit.config import ModelConfig
    from alignkit.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(
        ModelConfig(name_or_path=path, tokenizer=cfg.tokenizer, dtype=cfg.dtype), tokenizer
    )
    return model.to(_device()).eval().requires_grad_(False), tokenizer


@torch.no_grad()
def engine_logps(model, examples, pad_id: int, batch_size: int, per_token: bool = False):
    """Yield ``(batch, LogProbs on the CPU)`` over ``examples`` in chunks of ``batch_size`` rows."""
    from alignkit.engine import SequenceScorer, collate, sequence_logps

    scorer = SequenceScorer(model).eval()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        out = sequence_logps(scorer, batch, pad_id=pad_id, per_token=per_token)
        for key in ("logps", "lengths", "mask", "token_logps", "token_mask"):
            value = getattr(out, key)
            setattr(out, key, value.cpu() if value is not None else None)
        yield batch, out


def sample_kl(policy, reference, prompt_ids, response_ids, pad_id: int, batch_size: int) -> dict:
    """Per-sample ``sum_t log pi - log pi_ref`` ``[P, K]`` on the given samples, and per-token totals."""
    from alignkit.data.schema import TokenizedExample

    examples = [TokenizedExample(p, rs) for p, rs in zip(prompt_ids, response_ids)]
    rows, total, tokens = [], 0.0, 0
    pairs = zip(
        engine_logps(policy, examples, pad_id, batch_size, per_token=True),
        engine_logps(reference, examples, pad_id, batch_size, per_token=True),
    )
    for (_, pi), (_, ref) in pairs:
        diff = (pi.token_logps - ref.token_logps) * pi.token_mask  # [B, K, L]
        rows.append(diff.sum(-1))  # [B, K]
        total += float(diff.sum())
        tokens += int(pi.token_mask.sum())
    per_sample = torch.cat(rows)
    return {
        **per_prompt_stats(per_sample),
        "per_token": total / tokens if tokens else float("nan"),
        "per_sample": per_sample,
    }


def reference_perplexity(model, tokenizer, cfg: EvalConfig) -> dict:
    from alignkit.train.sft import best_response_only

    examples = [
        best_response_only(ex)
        for ex in tokenize(load_rows(cfg.reference_responses, cfg.max_rows), tokenizer, cfg)
    ]
    examples = [ex for ex in examples if ex.response_ids]
    if not examples:
        raise DataError(f"reference_responses: {cfg.reference_responses} has no responses")
    nll, tokens = 0.0, 0
    for _, out in engine_logps(model, examples, tokenizer.pad_token_id, cfg.batch_size):
        nll -= float(out.logps.sum())
        tokens += int(out.lengths.sum())
    return {"perplexity": M.perplexity(nll, tokens), "tokens": tokens, "rows": len(examples)}


def reference_logps(reference, examples, pad_id: int, cfg: EvalConfig) -> list[torch.Tensor]:
    """The reference's log-probs ``[B, K]`` per batch of preference rows, computed once per loaded reference
    and data settings (``compare`` scores every run's implicit reward against one loaded start model)."""
    weights_version = sum(p._version for p in reference.parameters())  # any in-place update changes it
    key = (cfg.preference_data, cfg.max_rows, cfg.max_length, cfg.max_prompt_length, cfg.chat_strings,
           cfg.batch_size, len(examples), weights_version)
    cache = reference.__dict__.setdefault("_alignkit_preference_logps", {})  # lives as long as the model
    if key not in cache:
        cache[key] = [out.logps for _, out in engine_logps(reference, examples, pad_id, cfg.batch_size)]
    return cache[key]


def implicit_scores(model, reference, tokenizer, examples, cfg: EvalConfig, kind: str):
    """Policy scores ``[B, K]`` per batch of preference rows, with the targets and masks."""
    pad = tokenizer.pad_token_id
    pol = engine_logps(model, examples, pad, cfg.batch_size)
    ref = iter(reference_logps(reference, examples, pad, cfg)) if kind == "ratio" else None
    for batch, out in pol:
        score = out.logps
        if kind == "ratio":
            score = score - next(ref)
        elif kind == "mean_logp":
            score = score / out.lengths.clamp(min=1)
        yield score, batch.scores, batch.mask


def preference_accuracy(model, reference, tokenizer, cfg: EvalConfig) -> dict:
    from alignkit.rewards import build_reward
    from alignkit.rewards.base import as_text

    raw = [
        ex
        for ex in load_rows(cfg.preference_data, cfg.max_rows)
        if ex.scores is not None and len(set(ex.scores)) > 1
    ]
    if not raw:
        raise DataError(f"preference_data: {cfg.preference_data} has no pairs or rankings with a preference")
    kind = cfg.implicit_reward
    if kind == "auto":
        kind = "ratio" if reference is not None else "logp"
    if kind == "ratio" and reference is None:
        raise ConfigError("implicit_reward: 'ratio' needs a reference model (set reference)")
    examples = tokenize(raw, tokenizer, cfg)
    scores, targets, masks = [], [], []
    for s, t, m in implicit_scores(model, reference, tokenizer, examples, cfg, kind):
        scores += s.tolist()
        targets += t.tolist()
        masks += m.tolist()
    out = {"policy": M.preference_accuracy(scores, targets, masks), "policy_kendall_tau": M.kendall_tau(
        scores, targets, masks), "policy_score": kind, "rows": len(raw)}
    if cfg.reward_model:
        rm = build_reward({"kind": "model", "path": cfg.reward_model})
        prompts = [as_text(ex.prompt) for ex in raw for _ in ex.responses]
        responses = [as_text(r) for ex in raw for r in ex.responses]
        flat = rm.score(prompts, responses).tolist()
        rm_scores, i = [], 0
        for ex in raw:
            rm_scores.append(flat[i : i + len(ex.responses)])
            i += len(ex.responses)
        out["reward_model"] = M.preference_accuracy(rm_scores, [ex.scores for ex in raw])
        out["reward_model_kendall_tau"] = M.kendall_tau(rm_scores, [ex.scores for ex in raw])
    return out


# ---------------------------------------------------------------- the runner


def check_config(cfg: EvalConfig) -> None:
    if not cfg.prompts:
        raise ConfigError("prompts: no prompts file; set prompts to a data file with a prompt column")
    if cfg.best_of_k and not cfg.rewards:
        raise ConfigError("best_of_k: needs at least one reward in rewards")
    if cfg.sampling.num_samples < 1:
        raise ConfigError("sampling.num_samples: must be at least 1")
    if bool(cfg.baseline) != (cfg.judge is not None):
        raise ConfigError("baseline and judge: a win rate needs both (or neither)")


def evaluate_model(cfg: EvalConfig, model=None, tokenizer=None, reference=None, write: bool = True) -> dict:
    """Evaluate ``cfg.model`` (or an already loaded ``model``) and return the report as a dict.

    ``reference`` may be passed loaded too (``compare`` loads the starting model once).
    With ``write``, ``eval.json`` and ``samples.jsonl`` go to ``cfg.output_dir``.
    """
    from alignkit.engine.generation import sample
    from alignkit.rewards.base import as_text

    check_config(cfg)
    if model is None:
        if not cfg.model:
            raise ConfigError("model: no model to evaluate; set model to a folder, a Hub id or tiny-llama")
        model, tokenizer = load_model(cfg.model, cfg)
    if reference is None and cfg.reference:
        reference, _ = load_model(cfg.reference, cfg, tokenizer)
    rewards = build_rewards(cfg.rewards)
    examples = load_prompt_rows(cfg)
    prompts = [as_text(ex.prompt) for ex in examples]
    prompt_ids = [
        ex.prompt_ids
        for ex in tokenize(
            [replace(ex, responses=[], scores=None, desirable=None) for ex in examples], tokenizer, cfg
        )
    ]
    baseline = load_baseline(cfg, examples, prompts) if cfg.baseline else None

    n, K = cfg.sampling.num_samples, max(cfg.best_of_k, cfg.sampling.num_samples)
    samples = sample(
        model, tokenizer, prompt_ids, replace(cfg.sampling, num_samples=K), progress=cfg.progress
    )
    main = [rs[:n] for rs in samples.texts]
    result, scores = evaluate_texts(cfg, prompts, main, rewards, baseline)
    result = {"model": cfg.model, "reference": cfg.reference, **result}
    all_scores = score_all(rewards, prompts, samples.texts) if K > n else scores
    if cfg.best_of_k:
        selected_by = cfg.best_of_k_reward or next(iter(rewards))
        if selected_by not in rewards:
            raise ConfigError(f"best_of_k_reward: no reward named {selected_by!r}; have {', '.join(rewards)}")
        curve = best_of_k_curve(all_scores[selected_by], all_scores, powers_of_two(cfg.best_of_k))
        result["best_of_k"] = {"selected_by": selected_by, **curve}
    kl = None
    if reference is not None:
        kl = sample_kl(
            model,
            reference,
            prompt_ids,
            [rs[:n] for rs in samples.response_ids],
            tokenizer.pad_token_id,
            cfg.batch_size,
        )
        result["kl"] = {k: v for k, v in kl.items() if k != "per_sample"}
    if cfg.reference_responses:
        result["perplexity"] = reference_perplexity(model, tokenizer, cfg)
    if cfg.preference_data:
        result["preference_accuracy"] = preference_accuracy(model, reference, tokenizer, cfg)
    result["gen"] = {k.removeprefix("gen/"): v for k, v in samples.metrics.items()}
    result["config"] = asdict(cfg)
    result = json_safe(result)
    if write:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_samples(out / "samples.jsonl", prompts, samples.texts, all_scores, kl, baseline)
        (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_samples(
    path: Path, prompts, texts, scores: dict[str, torch.Tensor], kl: dict | None, baseline
) -> None:
    """One JSON line per prompt: its samples, each reward of each, their KL, the baseline."""
    with Path(path).open("w") as f:
        for i, (prompt, responses) in enumerate(zip(prompts, texts)):
            row: dict[str, Any] = {
                "prompt": prompt,
                "responses": responses,
                "rewards": {name: s[i].tolist() for name, s in scores.items()},
            }
            if kl is not None:
                row["kl"] = kl["per_sample"][i].tolist()
            if baseline is not None:
                row["baseline"] = baseline[i]
            f.write(json.dumps(json_safe(row)) + "\n")


def read_samples(path: str | Path) -> list[dict]:
    path = Path(path)
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


# ---------------------------------------------------------------- terminal table


def _pm(stats: dict | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    se = stats.get("stderr")
    return f"{stats['mean']:.4g}" + (f" ± {se:.2g}" if se is not None else "")


def _num(x, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(result: dict) -> str:
    """The report as aligned ``metric  value`` lines."""
    rows = [
        ("model", str(result.get("model") or "-")),
        ("samples", f"{result['n_prompts']} prompts x {result['samples_per_prompt']}"),
    ]
    rows += [(f"reward {name}", _pm(s)) for name, s in result["rewards"].items()]
    bok = result.get("best_of_k")
    if bok:
        for name, curve in bok["rewards"].items():
            cells = [f"k={k}: {_num(m)}" for k, m in zip(bok["k"], curve["mean"])]
            rows.append((f"best-of-k {name}", ", ".join(cells)))
    if "kl" in result:
        rows.append(("KL(pi||ref)", f"{_pm(result['kl'])} ({_num(result['kl']['per_token'], '.3g')}/token)"))
    if "perplexity" in result:
        rows.append(("perplexity", _num(result["perplexity"]["perplexity"])))
    rows += [
        ("MSTTR-100", _num(result["msttr_100"])),
        ("distinct-1", _num(result["distinct_1"])),
        ("distinct-2", _num(result["distinct_2"])),
        ("unique-1", _num(result["unique_1"], "d")),
        ("unique-2", _num(result["unique_2"], "d")),
        ("length (words)", _num(result["length"])),
    ]
    if "preference_accuracy" in result:
        acc = result["preference_accuracy"]
        rows.append((f"pref. accuracy ({acc['policy_score']})", _num(acc["policy"])))
        if "policy_kendall_tau" in acc:
            rows.append((f"Kendall tau ({acc['policy_score']})", _num(acc["policy_kendall_tau"])))
        if "reward_model" in acc:
            rows.append(("pref. accuracy (reward model)", _num(acc["reward_model"])))
    if "win_rate" in result:
        w = result["win_rate"]
        rows.append(
            (
                f"win rate vs {w['baseline']}",
                f"{_num(w['win_rate'])} (win {w['win']}, tie {w['tie']}, loss {w['loss']}; judge {w['judge']})",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
