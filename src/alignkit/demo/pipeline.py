"""The demo pipeline: sentiment steering (the IMDB task of the PPO, DPO and RAFT papers), offline.

Stages, each timed (:attr:`DemoResult.timings`):

1. ``base``: the starting (SFT) model. Built in: a tiny Llama with a BPE tokenizer trained
   on :mod:`alignkit.demo.corpus` reviews, pretrained on them with the ``sft`` trainer
   (``{text}`` rows). With ``model`` set: that model, as is.
2. ``prompts``: review openings. Built in: openings of held-out generated reviews (never
   seen in pretraining). With ``dataset`` set: the first ``prompt_words`` words of its
   ``text_column`` (IMDB's ``text``).
3. ``preferences``: K samples per training prompt from the base model, scored by VADER on
   the continuation, written as ranked rows ``{prompt, responses, scores}`` (RRHF, PRO,
   listwise DPO), best-vs-worst pairs ``{prompt, chosen, rejected}`` (DPO, SimPO) and the
   best sample as SFT rows ``{prompt, completion}`` (``sft``: fine-tuning on preferred
   samples, the DPO paper's Preferred-FT).
4. ``reward_model``: a causal reward model (the base body + a scalar head) trained with the
   K-wise loss on the ranked rows, its accuracy measured on held-out rankings. It is the
   training reward of the online methods (RAFT, PPO), as in RLHF; VADER stays the
   evaluation's gold reward, so a method that only fools the reward model shows it.
5. ``compare``: :func:`alignkit.eval.compare.run_compare` trains every method from the base
   with one seed and budget, samples fresh continuations of held-out prompts from each
   model and writes the report (table, plots, HTML page).

Stages 1-4 are cached under ``cache_dir/<key>``, where the key hashes the generator version
and every setting they depend on, so a second run goes straight to the comparison.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError

log = logging.getLogger("alignkit")

DEFAULT_METHODS = ["sft", "dpo", "simpo", "rrhf", "pro", "listwise_dpo", "raft", "ppo"]
# The demo's file for each data shape of a method's spec (alignkit.train.methods); ranked rows (the base
# data) for the rest: rrhf, pro, listwise_dpo, kto...
DATA_FILES = {"sft": "best.jsonl", "pairs": "pairs.jsonl", "prompts": "prompts.jsonl"}
# The demo's hyper-parameters of a family of methods (on top of the compare config's base).
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "sampling": {"online.stages": 3, "online.prompts_per_stage": 64, "train.num_epochs": 1.0},
    "rl": {"train.learning_rate": 5e-4, "train.batch_size": 16, "sampling.num_samples": 2, "ppo.num_ppo_epochs": 2,
           "ppo.kl_coef": 0.05},
}


@dataclass
class DemoConfig:
    model: str = ""  # a causal LM (Hub id or path); empty: the built-in tiny review model, pretrained here
    dataset: str = ""  # prompts: a dataset (Hub id, folder or file) with a text column; empty: built-in reviews
    text_column: str = "text"  # the dataset column whose first words are the prompts
    split: str = "train"  # the dataset split read for prompts
    prompt_words: int = 8  # with a dataset: words of each text kept as the prompt
    output_dir: str = "runs/demo"  # compare runs and report/ go here
    cache_dir: str = ""  # base model, prompts, preferences and reward model (default: see cache_root)
    seed: int = 0  # corpus, initialisation, sampling and training seed
    # the built-in base model
    num_reviews: int = 4000  # generated reviews for pretraining
    vocab_size: int = 1024  # BPE vocabulary trained on them
    hidden_size: int = 128  # tiny Llama width
    num_layers: int = 4  # tiny Llama depth
    pretrain_steps: int = 150  # optimizer steps of 32 reviews
    pretrain_lr: float = 3e-3  # peak learning rate (cosine)
    # preference data and reward model
    num_prompts: int = 256  # training prompts, each sampled num_samples times
    num_samples: int = 4  # K samples per prompt for the preference data
    max_new_tokens: int = 24  # continuation length in tokens (data, training samples and evaluation)
    rm_steps: int = 60  # reward-model optimizer steps of 16 rankings
    # alignment and evaluation
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))  # compared methods
    method_steps: int = 24  # optimizer steps (RAFT stages x steps, PPO iterations) per method
    online_reward: str = "reward_model"  # training reward of RAFT/PPO: reward_model or vader
    eval_prompts: int = 64  # held-out prompts sampled by every model
    eval_samples: int = 4  # samples per held-out prompt
    threads: int = 0  # torch CPU threads (0: 1 for the built-in tiny model, which gains little from more and
    # slows down badly when the cores are busy; torch's default with --model)
    fresh: bool = True  # train every method again (False: reuse finished runs in output_dir, as compare does)
    progress: bool = True  # progress bars


@dataclass
class DemoResult:
    report_dir: Path  # table.md, table.csv, *.png, report.html
    table: str  # the headline: the matched-KL table(s) with intervals (markdown)
    vader: dict[str, float]  # mean VADER reward of fresh samples per row label (start and every method)
    reward_model_accuracy: float  # held-out ranking accuracy of the reward model
    timings: dict[str, float]  # seconds per stage (0 when cached) and total
    cached: bool  # stages 1-4 came from the cache


# ---------------------------------------------------------------- cache


def cache_root(cfg: DemoConfig) -> Path:
    """``cfg.cache_dir``, else ``$ALIGNKIT_CACHE/demo``, ``$XDG_CACHE_HOME/alignkit/demo`` or ``~/.cache/alignkit/demo``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    if os.environ.get("ALIGNKIT_CACHE"):
        return Path(os.environ["ALIGNKIT_CACHE"]) / "demo"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "alignkit" / "demo"


def cache_key(cfg: DemoConfig) -> str:
    """A hash of the corpus version and of every setting the cached stages depend on."""
    from alignkit.demo.corpus import CORPUS_VERSION

    keys = ["model", "dataset", "text_column", "split", "prompt_words", "seed", "num_reviews", "vocab_size",
            "hidden_size", "num_layers", "pretrain_steps", "pretrain_lr", "num_prompts", "num_samples",
            "max_new_tokens", "rm_steps", "eval_prompts"]
    payload = {"version": CORPUS_VERSION, "stages": 1, **{k: getattr(cfg, k) for k in keys}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- 1. base model and 2. prompts


def pretrain_base(cfg: DemoConfig, folder: Path) -> tuple[Path, list[str], list[str]]:
    """Generate reviews, train the tokenizer, pretrain a tiny Llama; returns (model dir, train and eval prompts)."""
    from alignkit.config import Config, from_dict
    from alignkit.demo.corpus import generate_reviews, review_prompt
    from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
    from alignkit.train.run import run_train

    held = cfg.num_prompts + cfg.eval_prompts
    reviews = generate_reviews(cfg.num_reviews + held, seed=cfg.seed)
    corpus, held_out = reviews[: cfg.num_reviews], reviews[cfg.num_reviews :]
    rng = random.Random(cfg.seed)
    prompts = [review_prompt(r, rng) for r in held_out]
    _write_jsonl(folder / "reviews.jsonl", [{"text": r.text} for r in corpus])
    tokenizer = build_tiny_tokenizer([r.text for r in corpus], vocab_size=cfg.vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                             num_heads=4, max_position_embeddings=256, seed=cfg.seed)
    init = folder / "init"
    tokenizer.save_pretrained(init)
    model.save_pretrained(init)
    run_cfg = from_dict(Config, {
        "method": "sft",
        "model": {"name_or_path": str(init)},
        "data": {"train": str(folder / "reviews.jsonl"), "max_length": 128},
        "train": {"output_dir": str(folder / "pretrain"), "learning_rate": cfg.pretrain_lr, "batch_size": 32,
                  "max_steps": cfg.pretrain_steps, "warmup_steps": min(20, cfg.pretrain_steps // 10),
                  "schedule": "cosine", "seed": cfg.seed, "log_every": 10, "progress": cfg.progress},
    })
    log.info("demo: pretraining a %d-layer tiny Llama on %d generated reviews", cfg.num_layers, len(corpus))
    run_train(run_cfg)
    return folder / "pretrain" / "final", prompts[: cfg.num_prompts], prompts[cfg.num_prompts :]


def dataset_prompts(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """Prompts from ``cfg.dataset``: the first ``prompt_words`` words of ``text_column``, shuffled, split."""
    from alignkit.data.loaders import BadRow, read_rows

    need = cfg.num_prompts + cfg.eval_prompts
    texts: list[str] = []
    try:
        for row, _ in read_rows(cfg.dataset, split=cfg.split):
            if isinstance(row, BadRow):
                continue
            if cfg.text_column not in row:
                raise AlignkitError(f"dataset {cfg.dataset!r} has no column {cfg.text_column!r} "
                                    f"(columns: {', '.join(map(str, row))}); pass --text-column")
            words = str(row[cfg.text_column]).replace("<br />", " ").split()
            if len(words) > cfg.prompt_words:
                texts.append(" ".join(words[: cfg.prompt_words]))
            if len(texts) >= 20 * need:
                break
    except AlignkitError:
        raise
    except Exception as err:  # noqa: BLE001  (datasets raises many kinds when offline)
        raise AlignkitError(_offline_message("dataset", cfg.dataset, err)) from None
    if len(texts) < need:
        raise AlignkitError(f"dataset {cfg.dataset!r}: {len(texts)} texts longer than {cfg.prompt_words} words, "
                            f"need {need} (lower --num-prompts / --eval-prompts)")
    random.Random(cfg.seed).shuffle(texts)
    return texts[: cfg.num_prompts], texts[cfg.num_prompts : need]


def _offline_message(what: str, name: str, err: Exception) -> str:
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return (f"{what} {name!r} is not a local path and could not be downloaded ({type(err).__name__}: {first}). "
            "With no network, give a local copy (a saved folder or file), or run `alignkit demo` without "
            "--model/--dataset for the built-in offline task.")


# ---------------------------------------------------------------- 3. preference data


def build_preferences(cfg: DemoConfig, model_dir: Path, prompts: list[str], folder: Path) -> dict[str, float]:
    """Sample K continuations per prompt, score them with VADER, write ranked/pairs/best files."""
    from alignkit.config import ModelConfig
    from alignkit.engine.generation import SamplingConfig, sample
    from alignkit.models.loading import load_causal_lm
    from alignkit.rewards.vader import VaderReward

    model, tokenizer = load_causal_lm(ModelConfig(name_or_path=str(model_dir)))
    ids = [tokenizer(p).input_ids for p in prompts]
    sampling = SamplingConfig(num_samples=cfg.num_samples, max_new_tokens=cfg.max_new_tokens, batch_size=32,
                              seed=cfg.seed)
    out = sample(model, tokenizer, ids, sampling, progress=cfg.progress)
    vader = VaderReward()
    ranked, pairs, best = [], [], []
    all_scores: list[float] = []
    for prompt, texts in zip(prompts, out.texts):
        scores = vader.score([prompt] * len(texts), texts).tolist()
        keep = {}
        for text, score in zip(texts, scores):  # drop empty and duplicate responses
            if text.strip() and text not in keep:
                keep[text] = score
        all_scores += scores
        if len(keep) < 2 or len(set(keep.values())) < 2:
            continue
        ranked.append({"prompt": prompt, "responses": list(keep), "scores": list(keep.values())})
        hi, lo = max(keep, key=keep.get), min(keep, key=keep.get)
        pairs.append({"prompt": prompt, "chosen": hi, "rejected": lo})
        best.append({"prompt": prompt, "completion": hi})
    if len(ranked) < 8:
        raise AlignkitError(f"only {len(ranked)} prompts got samples of differing sentiment; the base model "
                            "needs to write text (try more --pretrain-steps)")
    _write_jsonl(folder / "ranked.jsonl", ranked)
    _write_jsonl(folder / "pairs.jsonl", pairs)
    _write_jsonl(folder / "best.jsonl", best)
    return {"rows": len(ranked), "mean_vader": sum(all_scores) / len(all_scores),
            "tokens_per_s": out.metrics["gen/tokens_per_s"]}


# ---------------------------------------------------------------- 4. reward model


def train_reward(cfg: DemoConfig, model_dir: Path, folder: Path) -> float:
    """A causal reward model on the VADER rankings; returns its held-out ranking accuracy."""
    from alignkit.config import Config, from_dict
    from alignkit.train.run import run_train

    run_cfg = from_dict(Config, {
        "method": "reward_model",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(folder / "ranked.jsonl"), "eval_size": 0.15},
        "reward_model": {"kind": "causal", "max_length": 96, "center_examples": 128},
        "train": {"output_dir": str(folder / "reward_model"), "learning_rate": 1e-3, "batch_size": 16,
                  "max_steps": cfg.rm_steps, "warmup_steps": 5, "seed": cfg.seed, "log_every": 10,
                  "progress": cfg.progress},
    })
    run_train(run_cfg)
    records = _read_jsonl(folder / "reward_model" / "metrics.jsonl")
    return next((r["eval/accuracy"] for r in reversed(records) if "eval/accuracy" in r), float("nan"))


# ---------------------------------------------------------------- 5. compare


def method_entry(name: str, folder: Path, family_overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One ``methods:`` entry of the compare config: the data of the method's shape and its family's demo
    hyper-parameters (both read from the method's spec; ``family_overrides`` defaults to this demo's)."""
    from alignkit.train.methods import method_spec

    spec = method_spec(name)
    overrides = dict((FAMILY_OVERRIDES if family_overrides is None else family_overrides).get(spec.family, {}))
    if spec.data in DATA_FILES:
        overrides = {"data.train": str(folder / DATA_FILES[spec.data]), **overrides}
    return {"name": name, "method": name, "overrides": overrides}


def compare_config(cfg: DemoConfig, model_dir: Path, folder: Path) -> dict[str, Any]:
    """The ``alignkit compare`` config of the demo (also written to ``output_dir/compare.yaml``)."""
    online_reward = ({"kind": "model", "path": str(folder / "reward_model" / "final"), "name": "reward_model"}
                     if cfg.online_reward == "reward_model" else {"kind": "vader"})
    rm_eval = [online_reward] if cfg.online_reward == "reward_model" else []
    return {
        "output_dir": cfg.output_dir,
        "seed": cfg.seed,
        "budget": {"max_steps": cfg.method_steps},
        "base": {
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": str(folder / "ranked.jsonl"), "max_length": 96, "max_prompt_length": 48},
            "train": {"learning_rate": 1e-3, "batch_size": 16, "schedule": "constant", "log_every": 1,
                      "progress": cfg.progress},
            "sampling": {"num_samples": cfg.num_samples, "max_new_tokens": cfg.max_new_tokens},
            "rewards": [online_reward],
        },
        "rewards": [{"kind": "vader"}, *rm_eval],
        "methods": [method_entry(m, folder) for m in cfg.methods],
        "eval": {
            "prompts": str(folder / "eval_prompts.jsonl"),
            "max_length": 96,
            "sampling": {"num_samples": cfg.eval_samples, "max_new_tokens": cfg.max_new_tokens, "batch_size": 32},
            "best_of_k": cfg.eval_samples,
            "best_of_k_reward": "vader",
            "progress": cfg.progress,
        },
        "include_dataset": False,
        "samples_shown": 8,
    }


# ---------------------------------------------------------------- the whole demo


def prepare(cfg: DemoConfig, timings: dict[str, float]) -> tuple[Path, Path, float, bool]:
    """Stages 1-4 (cached); returns (base model dir, cache folder, reward-model accuracy, was cached)."""
    folder = cache_root(cfg) / cache_key(cfg)
    done = folder / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        log.info("demo: reusing the cached base model, data and reward model in %s", folder)
        for stage in ("base", "preferences", "reward_model"):
            timings[stage] = 0.0
        return Path(info["base"]), folder, info["reward_model_accuracy"], True
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if cfg.model:
        base = Path(cfg.model) if Path(cfg.model).exists() else cfg.model
        _check_model(cfg.model)
        train_prompts, eval_prompts = dataset_prompts(cfg) if cfg.dataset else _builtin_prompts(cfg)
    else:
        base, train_prompts, eval_prompts = pretrain_base(cfg, folder)
        if cfg.dataset:
            train_prompts, eval_prompts = dataset_prompts(cfg)
    _write_jsonl(folder / "prompts.jsonl", [{"prompt": p} for p in train_prompts])
    _write_jsonl(folder / "eval_prompts.jsonl", [{"prompt": p} for p in eval_prompts])
    timings["base"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = build_preferences(cfg, base, train_prompts, folder)
    log.info("demo: %d ranked prompts, mean VADER of the base model's samples %.3f", stats["rows"],
             stats["mean_vader"])
    timings["preferences"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    accuracy = train_reward(cfg, base, folder)
    log.info("demo: reward model held-out ranking accuracy %.3f", accuracy)
    timings["reward_model"] = time.perf_counter() - t0
    done.write_text(json.dumps({"base": str(base), "reward_model_accuracy": accuracy, "config": asdict(cfg),
                                "preferences": stats}, indent=1))
    return Path(base), folder, accuracy, False


def export_inputs(out_dir: Path, files: tuple[str, ...], cache_dir: str = "", progress: bool = False) -> Path:
    """Copy the cached demo's ``files`` and its base model (as ``base/``, replaced) into ``out_dir``, building
    the demo first when absent: the start of the tasks built on it (MaxMin's, the Nash-MD judge's). Returns the
    cache folder."""
    import shutil

    base, folder, _, _ = prepare(DemoConfig(cache_dir=cache_dir, progress=progress), {})
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(folder / name, out_dir / name)
    shutil.rmtree(out_dir / "base", ignore_errors=True)
    shutil.copytree(base, out_dir / "base")
    return folder


def default_task_folder(progress: bool = False) -> Path:
    """The cache folder of the default demo's stages 1-4 (``pretrain/final``, ``prompts.jsonl``,
    ``eval_prompts.jsonl``, ``reward_model/final``, ...), built first when missing: what a
    ``demo:FILE`` path of a soup config names."""
    return prepare(DemoConfig(progress=progress), {})[1]


def _builtin_prompts(cfg: DemoConfig) -> tuple[list[str], list[str]]:
    from alignkit.demo.corpus import generate_reviews, review_prompt

    rng = random.Random(cfg.seed)
    reviews = generate_reviews(cfg.num_reviews + cfg.num_prompts + cfg.eval_prompts, seed=cfg.seed)
    prompts = [review_prompt(r, rng) for r in reviews[cfg.num_reviews :]]
    return prompts[: cfg.num_prompts], prompts[cfg.num_prompts :]


def _check_model(name: str) -> None:
    """Fail early, with one message, when a model is neither local nor downloadable."""
    if Path(name).exists():
        return
    from alignkit.models.loading import load_tokenizer

    try:
        load_tokenizer(name)
    except AlignkitError as err:
        raise AlignkitError(_offline_message("model", name, err)) from None


def compare_stage(data: dict[str, Any], out: Path, fresh: bool) -> Path:
    """Write ``out/compare.yaml`` and run it (every demo tier's last stage); returns the report folder.

    ``fresh``: a folder an earlier demo wrote (it has compare.yaml) loses its runs, so every method is
    measured again; otherwise finished runs are reused as ``alignkit compare`` does.
    """
    import yaml

    from alignkit.config import from_dict
    from alignkit.eval.compare import CompareConfig, run_compare

    if fresh and (out / "compare.yaml").is_file() and (out / "runs").is_dir():
        shutil.rmtree(out / "runs")  # a folder this demo wrote before: measure again, do not reuse
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return run_compare(from_dict(CompareConfig, data))


def quiet_transformers(threads: int) -> None:
    """No transformers progress bars or info logs; ``threads`` torch CPU threads (0: torch's default)."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if threads:
        torch.set_num_threads(threads)


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run every stage; returns the report folder, the table and the measured numbers."""
    if cfg.online_reward not in ("reward_model", "vader"):
        raise AlignkitError(f"online_reward: {cfg.online_reward!r}; choose reward_model or vader")
    quiet_transformers(cfg.threads or (0 if cfg.model else 1))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    base, folder, accuracy, cached = prepare(cfg, timings)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    report = compare_stage(compare_config(cfg, base, folder), out, cfg.fresh)
    timings["compare"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    vader = {}
    for run in sorted((out / "runs").iterdir()):
        path = run / "eval.json"
        if path.is_file():
            vader[run.name] = json.loads(path.read_text())["rewards"]["vader"]["mean"]
    result = DemoResult(report, (report / "matched_kl.md").read_text(), vader, accuracy, timings, cached)
    (out / "demo.json").write_text(json.dumps({**asdict(result), "report_dir": str(report)}, indent=1))
    return result
