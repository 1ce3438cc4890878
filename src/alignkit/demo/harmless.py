"""The demo's real-model tier: align SmolLM2-135M-Instruct for harmlessness on human preference pairs.

``alignkit demo --model smollm2-135m-instruct`` (``--task harmless``). Stages, each timed:

1. ``pairs``: Anthropic HH-RLHF harmless pairs (``../shared/data``, or ``--dataset``; where neither
   exists, the pairs shipped in the package, ``alignkit:tiny_pairs``), grouped by prompt, the groups
   shuffled and dealt to three DISJOINT splits (:func:`split_pairs`): held-out ``eval`` pairs (the
   prompts every model answers, and the pairs of the preference accuracy), the ``policy``'s pairs
   (DPO's pairs, SFT's chosen replies, RAFT's and PPO's prompts) and the ``reward_model``'s pairs.
2. ``reward_model``: MiniLM with a Bradley-Terry head trained on its split alone, its accuracy
   measured on the eval pairs. It is the judge of every model (held-out reward, win rate against
   the start model) and, as in RLHF (and in RAFT's HH experiments), the training reward of RAFT
   and PPO.
3. ``lists``: listwise DPO needs rankings, HH has pairs: for each policy prompt the lists hold the
   human chosen and rejected replies and ``num_samples`` replies of the start model, ranked by the
   reward model (RRHF's HH recipe: responses of several sources ranked by a reward model).
4. ``compare``: :func:`alignkit.eval.compare.run_compare` trains SFT, DPO, listwise DPO, RAFT and PPO
   from the start model with LoRA, one seed and one budget of optimizer steps, samples replies to the
   held-out prompts and reports the reward model's score, win rate against the start model's replies,
   KL to the start model and the implicit-reward preference accuracy on held-out pairs
   (``summary.md`` beside the compare report holds the headline table and replies side by side).

Stages 1-3 are cached under ``cache_dir/harmless-<key>`` (the key hashes the data file's size and
name and every setting they depend on); the compare runs resume as ``alignkit compare`` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignkit.demo.pipeline import (
    _read_jsonl,
    _write_jsonl,
    cache_root,
    compare_stage,
    method_entry,
    quiet_transformers,
)
from alignkit.errors import DataError

log = logging.getLogger("alignkit")

SHARED_HH = "../shared/data/hh-rlhf-harmless/test.jsonl.gz"  # beside the checkout, as the SmolLM2 configs
BUILTIN_PAIRS = "alignkit:tiny_pairs.jsonl"  # the package's own helpful-vs-rude pairs, where no HH file exists
HARMLESS_METHODS = ["sft", "dpo", "listwise_dpo", "raft", "ppo"]
# LoRA learning rates of each family on SmolLM2-135M, in the range LoRA users train at (the QLoRA / alignment-handbook
# LoRA SFT rate 2e-4 for SFT and RAFT's fine-tuning; 5e-4 for LoRA DPO with TRL's and the DPO paper's beta 0.1;
# PPO 1e-4). At the 5e-5 / 2e-5 of the full fine-tuning recipes, 6 steps moved no method (KL < 0.25).
# PPO has no missing-EOS penalty: at 32 new tokens almost no reply ends, so it would shift every score alike.
HARMLESS_FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "sft": {"train.learning_rate": 2e-4},
    "preference": {"train.learning_rate": 5e-4, "loss.beta": 0.1},
    "sampling": {"train.learning_rate": 2e-4, "online.stages": 2, "train.num_epochs": 1.0},
    "rl": {"train.learning_rate": 1e-4, "sampling.num_samples": 1, "ppo.num_ppo_epochs": 2, "ppo.kl_coef": 0.05},
}


@dataclass
class HarmlessConfig:
    model: str = "smollm2-135m-instruct"  # the chat model aligned (alias, folder, .gguf or Hub id)
    dataset: str = ""  # HH-style pairs; empty: ../shared/data's HH harmless file, else alignkit:tiny_pairs
    reward_model: str = "minilm"  # the encoder the reward model starts from
    output_dir: str = "runs/demo_harmless"  # compare runs, report/ and summary.md
    cache_dir: str = ""  # splits, reward model and lists (default: the demo's cache)
    seed: int = 0
    rm_pairs: int = 1200  # reward-model pairs (a split disjoint from the policy's and the eval pairs)
    rm_steps: int = 32  # reward-model optimizer steps of 16 pairs
    num_prompts: int = 48  # the policy's pairs (and prompts)
    num_samples: int = 2  # start-model replies per prompt added to each listwise DPO list
    max_new_tokens: int = 32  # reply length in tokens (lists, RAFT, PPO and evaluation)
    methods: list[str] = field(default_factory=lambda: list(HARMLESS_METHODS))
    method_steps: int = 12  # optimizer steps per method (RAFT: in all stages; PPO: iterations), 4 prompts each
    eval_pairs: int = 32  # held-out pairs of the preference accuracy (their prompts come first as eval prompts)
    eval_prompts: int = 12  # held-out prompts every model answers
    eval_samples: int = 2  # replies per held-out prompt
    threads: int = 0  # torch CPU threads (0: torch's default)
    fresh: bool = True  # train every method again (False: reuse finished runs, as compare does)
    progress: bool = True


@dataclass
class HarmlessResult:
    report_dir: Path  # the compare report: table.md, matched_kl.md, report.html, plots
    table: str  # the headline table (markdown): reward, win rate, KL, preference accuracy per model
    summary: Path  # summary.md: the headline table and replies to the same held-out prompts side by side
    reward: dict[str, float]  # mean reward-model score of each row's replies to the held-out prompts
    reward_model_accuracy: float  # held-out pairwise accuracy of the judge
    timings: dict[str, float]  # seconds per stage (0 when cached) and total
    cached: bool  # stages 1-3 came from the cache


# ---------------------------------------------------------------- 1. pairs and their splits


def pairs_source(cfg: HarmlessConfig) -> str:
    """``cfg.dataset``, else the shared HH harmless file where it exists, else the package's own pairs."""
    if cfg.dataset:
        return cfg.dataset
    if Path(SHARED_HH).is_file():
        return SHARED_HH
    log.warning("demo: %s not found; using the pairs shipped in the package (%s)", SHARED_HH, BUILTIN_PAIRS)
    return BUILTIN_PAIRS


def split_pairs(examples: list, sizes: dict[str, int], seed: int) -> dict[str, list]:
    """Deal pairs to the splits named in ``sizes`` (in order) so that no prompt is in two of them.

    Pairs are grouped by prompt text and the groups shuffled with ``seed``; each split takes whole
    groups until it holds its size (the last group may overshoot it). With fewer pairs than the sizes
    add up to, every size is scaled down alike (at least 2 pairs each).
    """
    from alignkit.data.schema import as_text

    groups: dict[str, list] = {}
    for ex in examples:
        groups.setdefault(as_text(ex.prompt), []).append(ex)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    total = sum(sizes.values())
    scale = min(1.0, len(examples) / total) if total else 1.0
    want = {name: max(2, int(n * scale)) for name, n in sizes.items()}
    out: dict[str, list] = {name: [] for name in sizes}
    names = iter(sizes)
    name = next(names)
    for key in keys:
        while len(out[name]) >= want[name]:
            name = next(names, None)
            if name is None:
                return out
        out[name].extend(groups[key])
    short = [n for n in sizes if len(out[n]) < 2]
    if short:
        raise DataError(f"{len(examples)} pairs with {len(groups)} distinct prompts are too few to split into "
                        f"{', '.join(sizes)} (each needs 2); give more pairs (--dataset)")
    return out


def pair_rows(examples: list) -> list[dict]:
    return [{"prompt": ex.prompt, "chosen": ex.responses[ex.ranked()[0]], "rejected": ex.responses[ex.ranked()[-1]]}
            for ex in examples]


def write_splits(cfg: HarmlessConfig, source: str, folder: Path) -> dict[str, int]:
    """``rm_pairs``, ``pairs`` (+ ``best`` and ``prompts``) and ``eval_pairs`` files; returns their sizes."""
    from alignkit.data.examples import load_examples
    from alignkit.data.pipeline import resolve_data_path

    examples = [ex for ex in load_examples(resolve_data_path(source), skip_bad_rows=True)
                if ex.scores is not None and len(set(ex.scores)) > 1]
    splits = split_pairs(examples, {"eval": cfg.eval_pairs, "policy": cfg.num_prompts, "reward_model": cfg.rm_pairs},
                         cfg.seed)
    _write_jsonl(folder / "eval_pairs.jsonl", pair_rows(splits["eval"]))
    _write_jsonl(folder / "rm_pairs.jsonl", pair_rows(splits["reward_model"]))
    policy = pair_rows(splits["policy"])
    _write_jsonl(folder / "pairs.jsonl", policy)
    _write_jsonl(folder / "best.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in policy])
    _write_jsonl(folder / "prompts.jsonl", [{"prompt": r["prompt"]} for r in policy])
    return {name: len(rows) for name, rows in splits.items()}


# ---------------------------------------------------------------- 2. the reward model (the judge)

RM_LEARNING_RATE = 1e-4  # MiniLM's Bradley-Terry head: 1e-4 reached eval loss 0.682 in 20 steps, 5e-5 0.692 in 24


def train_judge(cfg: HarmlessConfig, folder: Path) -> float:
    """MiniLM + a Bradley-Terry head on ``rm_pairs.jsonl``; returns its accuracy on ``eval_pairs.jsonl``."""
    from alignkit.config import Config, from_dict
    from alignkit.train.run import run_train

    run_cfg = from_dict(Config, {
        "method": "reward_model",
        "model": {"name_or_path": cfg.reward_model},
        "data": {"train": str(folder / "rm_pairs.jsonl"), "eval": str(folder / "eval_pairs.jsonl")},
        "reward_model": {"loss": "bradley_terry", "max_length": 128, "center_examples": 64},
        "train": {"output_dir": str(folder / "reward_model"), "learning_rate": RM_LEARNING_RATE, "batch_size": 16,
                  "max_steps": cfg.rm_steps, "warmup_steps": max(1, cfg.rm_steps // 10), "seed": cfg.seed,
                  "log_every": 5, "progress": cfg.progress, "overwrite": True},
    })
    run_train(run_cfg)
    records = _read_jsonl(folder / "reward_model" / "metrics.jsonl")
    return next((r["eval/accuracy"] for r in reversed(records) if "eval/accuracy" in r), float("nan"))


def judge_spec(folder: Path) -> dict[str, Any]:
    return {"kind": "model", "path": str(folder / "reward_model" / "final"), "name": "reward_model"}


# ---------------------------------------------------------------- 3. listwise DPO's lists


def build_lists(cfg: HarmlessConfig, folder: Path) -> dict[str, float]:
    """``ranked.jsonl``: per policy prompt the human chosen and rejected replies and ``num_samples`` start-model
    replies, scored by the reward model (duplicates and empty replies dropped)."""
    from alignkit.config import ModelConfig
    from alignkit.data.schema import Example
    from alignkit.data.tokenize import TokenizeConfig, tokenize_examples
    from alignkit.engine.generation import SamplingConfig, sample
    from alignkit.models.loading import load_causal_lm
    from alignkit.rewards import build_reward

    pairs = _read_jsonl(folder / "pairs.jsonl")[: cfg.method_steps * BATCH]  # the prompts the budget reaches
    model, tokenizer = load_causal_lm(ModelConfig(name_or_path=cfg.model))
    tok_cfg = TokenizeConfig(max_prompt_length=MAX_PROMPT, max_length=MAX_LENGTH, chat_strings=True)
    prompt_ids = [ex.prompt_ids for ex in tokenize_examples([Example(r["prompt"], []) for r in pairs], tokenizer,
                                                            tok_cfg)]
    out = sample(model, tokenizer, prompt_ids, SamplingConfig(num_samples=cfg.num_samples,
                 max_new_tokens=cfg.max_new_tokens, temperature=0.7, batch_size=16, seed=cfg.seed),
                 progress=cfg.progress)
    del model
    judge = build_reward(judge_spec(folder))
    rows = []
    for pair, samples in zip(pairs, out.texts):
        responses = list(dict.fromkeys(r.strip() for r in [pair["chosen"], pair["rejected"], *samples] if r.strip()))
        scores = judge.score([_text(pair["prompt"])] * len(responses), responses).tolist()
        if len(set(scores)) > 1:
            rows.append({"prompt": pair["prompt"], "responses": responses, "scores": scores})
    _write_jsonl(folder / "ranked.jsonl", rows)
    flips = sum(r["scores"][0] < r["scores"][1] for r in rows if len(r["responses"]) > 1)
    return {"lists": len(rows), "human_pair_flipped": flips, "tokens_per_s": out.metrics.get("gen/tokens_per_s", 0.0)}


def _text(prompt) -> str:
    from alignkit.data.schema import as_text

    return as_text(prompt)


# ---------------------------------------------------------------- 4. compare

BATCH = 4  # prompts per optimizer step of every method
MAX_PROMPT, MAX_LENGTH = 80, 128  # tokens: prompt kept (its end), prompt + reply


def compare_config(cfg: HarmlessConfig, folder: Path) -> dict[str, Any]:
    """The ``alignkit compare`` config of the tier (also written to ``output_dir/compare.yaml``)."""
    judge = judge_spec(folder)
    families = {**HARMLESS_FAMILY_OVERRIDES,
                "sampling": {**HARMLESS_FAMILY_OVERRIDES["sampling"],
                             "online.prompts_per_stage": BATCH * -(-cfg.method_steps // 2)}}
    return {
        "output_dir": cfg.output_dir,
        "seed": cfg.seed,
        "budget": {"max_steps": cfg.method_steps},
        "base": {
            "model": {"name_or_path": cfg.model, "lora": {"enabled": True, "r": 16, "alpha": 32}},
            "data": {"train": str(folder / "ranked.jsonl"), "chat_strings": True, "max_prompt_length": MAX_PROMPT,
                     "max_length": MAX_LENGTH},
            "train": {"learning_rate": 5e-5, "batch_size": BATCH, "schedule": "constant", "log_every": 1,
                      "progress": cfg.progress},
            "sampling": {"num_samples": 4, "max_new_tokens": cfg.max_new_tokens, "temperature": 0.7},
            "rewards": [judge],
        },
        "rewards": [judge],
        "methods": [method_entry(m, folder, families) for m in cfg.methods],
        "eval": {
            "prompts": str(folder / "eval_pairs.jsonl"),
            "max_prompts": cfg.eval_prompts,
            "preference_data": str(folder / "eval_pairs.jsonl"),
            "max_rows": cfg.eval_pairs,
            "chat_strings": True,
            "max_prompt_length": MAX_PROMPT,
            "max_length": MAX_LENGTH,
            "sampling": {"num_samples": cfg.eval_samples, "max_new_tokens": cfg.max_new_tokens, "batch_size": 16},
            "baseline": "start",
            "judge": judge,
            "progress": cfg.progress,
        },
        "include_dataset": True,
        "samples_shown": cfg.eval_prompts,
    }


# ---------------------------------------------------------------- the whole tier


def cache_key(cfg: HarmlessConfig, source: str) -> str:
    path = Path(source)
    size = path.stat().st_size if path.is_file() else 0
    keys = ["model", "reward_model", "seed", "rm_pairs", "rm_steps", "num_prompts", "num_samples",
            "max_new_tokens", "method_steps", "eval_pairs"]
    payload = {"tier": "harmless-v2", "source": source, "size": size, **{k: getattr(cfg, k) for k in keys}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare(cfg: HarmlessConfig, timings: dict[str, float]) -> tuple[Path, float, bool]:
    """Stages 1-3 (cached); returns (cache folder, reward-model accuracy, was cached)."""
    source = pairs_source(cfg)
    folder = cache_root(cfg) / f"harmless-{cache_key(cfg, source)}"  # type: ignore[arg-type]
    done = folder / "done.json"
    if done.is_file():
        log.info("demo: reusing the cached splits, reward model and lists in %s", folder)
        timings.update(pairs=0.0, reward_model=0.0, lists=0.0)
        return folder, json.loads(done.read_text())["reward_model_accuracy"], True
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sizes = write_splits(cfg, source, folder)
    log.info("demo: %s pairs from %s (disjoint prompts)", sizes, source)
    timings["pairs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    accuracy = train_judge(cfg, folder)
    log.info("demo: reward model held-out pairwise accuracy %.3f", accuracy)
    timings["reward_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lists = build_lists(cfg, folder)
    timings["lists"] = time.perf_counter() - t0
    done.write_text(json.dumps({"source": source, "splits": sizes, "reward_model_accuracy": accuracy,
                                "lists": lists, "config": asdict(cfg)}, indent=1))
    return folder, accuracy, False


def run_harmless(cfg: HarmlessConfig) -> HarmlessResult:
    """Every stage; returns the report folder, the headline table and the measured numbers."""
    from alignkit.demo.harmless_report import headline, write_summary

    quiet_transformers(cfg.threads)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    folder, accuracy, cached = prepare(cfg, timings)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    report = compare_stage(compare_config(cfg, folder), out, cfg.fresh)
    timings["compare"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    rows = headline(out)
    table, summary = write_summary(out, report, rows, accuracy, timings)
    reward = {r["method"]: r["reward"] for r in rows if r.get("reward") is not None}
    result = HarmlessResult(report, table, summary, reward, accuracy, timings, cached)
    (out / "demo.json").write_text(json.dumps({**asdict(result), "report_dir": str(report),
                                               "summary": str(summary)}, indent=1))
    return result
