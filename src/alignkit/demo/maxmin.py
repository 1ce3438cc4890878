"""MaxMin-RLHF's two-group task on the demo's reviews (Chakraborty et al. 2024, arXiv 2402.08925).

The task (:func:`build_task`): the demo's base-model samples (``ranked.jsonl`` of the cached demo,
built by :func:`alignkit.demo.pipeline.prepare` when absent) are compared in every pair of a prompt's
samples by one of ``num_annotators`` annotators. A majority group (``1 - minority_share``) prefers the
more positive continuation (VADER compound, :class:`~alignkit.rewards.vader.VaderReward`); a minority
prefers the shorter one (:func:`brevity`, minus its words: the issue's example) or, with ``minority=
"negativity"``, the more negative one (:func:`negativity`, a group of critics whose preference directly
opposes the majority's). A pair its annotator's function ties is not
labelled. Rows are ``{prompt, chosen, rejected, annotator, group}``: the annotator ids are what the
mixture learns from, the group the truth it is scored against. Everything is deterministic in ``seed``.

The experiment (:func:`run_experiment`, ``alignkit demo --task maxmin``), per seed: the mixture
(``method: maxmin_reward_models``), then the same GRPO budget twice from the base model, once on the
pooled reward (the single-reward baseline) and once on the minimum over the group rewards (MaxMin);
the start and both policies are scored on held-out prompts by each group's true function, and by each
learned group reward in the units MaxMin compares them (what the minimum sees); the share of MaxMin's RL
steps whose minimum was each group is read from its log.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("alignkit")

MAJORITY = "sentiment"  # the majority group, named by what it prefers; the minority is named by its preference


def brevity(prompts: list[str], responses: list[str]) -> list[float]:
    """A minority's reward: minus the response's whitespace-separated words (shorter is better)."""
    return [-float(len(r.split())) for r in responses]


def negativity(prompts: list[str], responses: list[str]) -> list[float]:
    """A minority's reward: minus the VADER compound (the more negative continuation is better)."""
    from alignkit.rewards.vader import VaderReward

    return (-VaderReward().score(prompts, responses)).tolist()


# the minority's preference -> (its scoring function, the unit its reward is reported in)
MINORITY_PREFERENCES = {"brevity": ("alignkit.demo.maxmin:brevity", "-words"),
                        "negativity": ("alignkit.demo.maxmin:negativity", "-VADER")}


def _minority_function(minority: str):
    from alignkit.rewards.simple import import_function

    if minority not in MINORITY_PREFERENCES:
        raise ValueError(f"minority {minority!r}: choose one of {', '.join(MINORITY_PREFERENCES)}")
    return import_function(MINORITY_PREFERENCES[minority][0])


def annotators(num_annotators: int, minority_share: float, seed: int, minority: str = "brevity") -> dict[str, str]:
    """``{annotator id: group}``: ``round(minority_share * n)`` annotators, drawn with ``seed``, are the
    minority (group ``minority``), the others the majority."""
    ids = [f"a{i:02d}" for i in range(num_annotators)]
    chosen = set(random.Random(f"maxmin-annotators:{seed}").sample(ids, round(minority_share * num_annotators)))
    return {a: minority if a in chosen else MAJORITY for a in ids}


def label_pairs(ranked: list[dict], group_of: dict[str, str], seed: int) -> list[dict]:
    """Every pair of every row's ``responses``, labelled by a random annotator with its group's function
    (VADER for the majority, the minority's of :data:`MINORITY_PREFERENCES`); ties of that function are skipped."""
    from alignkit.rewards.vader import VaderReward

    prompts = [row["prompt"] for row in ranked for _ in row["responses"]]
    responses = [r for row in ranked for r in row["responses"]]
    score = {MAJORITY: VaderReward().score(prompts, responses).tolist()}
    for group in set(group_of.values()) - {MAJORITY}:
        score[group] = list(_minority_function(group)(prompts, responses))
    rng = random.Random(f"maxmin-pairs:{seed}")
    ids = sorted(group_of)
    rows, start = [], 0
    for row in ranked:
        n = len(row["responses"])
        for i, j in combinations(range(n), 2):
            annotator = rng.choice(ids)
            group = group_of[annotator]
            si, sj = score[group][start + i], score[group][start + j]
            if si == sj:
                continue
            win, lose = (i, j) if si > sj else (j, i)
            rows.append({"prompt": row["prompt"], "chosen": row["responses"][win],
                         "rejected": row["responses"][lose], "annotator": annotator, "group": group})
        start += n
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_task(out_dir: str | Path, seed: int = 0, num_annotators: int = 20, minority_share: float = 0.25,
               cache_dir: str = "", progress: bool = False, minority: str = "brevity") -> dict[str, Any]:
    """Write the task to ``out_dir``: ``pairs.jsonl``, ``prompts.jsonl``, ``eval_prompts.jsonl``, ``base/``
    (a copy of the demo's base model, the policy's start) and ``task.json`` (counts); returns the latter."""
    from alignkit.demo.pipeline import export_inputs

    _minority_function(minority)  # an unknown preference fails before the demo is built
    out = Path(out_dir)
    folder = export_inputs(out, ("prompts.jsonl", "eval_prompts.jsonl"), cache_dir, progress)
    ranked = [json.loads(line) for line in (folder / "ranked.jsonl").read_text().splitlines() if line.strip()]
    group_of = annotators(num_annotators, minority_share, seed, minority)
    rows = label_pairs(ranked, group_of, seed)
    _write_jsonl(out / "pairs.jsonl", rows)
    info = {"pairs": len(rows), "annotators": group_of, "seed": seed, "minority_share": minority_share,
            "minority": minority, "pairs_per_group": {g: sum(r["group"] == g for r in rows) for g in (MAJORITY, minority)},
            "source": str(folder / "ranked.jsonl")}
    (out / "task.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# ---------------------------------------------------------------- the experiment


@dataclass
class MaxMinExperiment:
    output_dir: str = "runs/maxmin"  # task/, seed<N>/{mixture,baseline,maxmin}/, results.json, table.md
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training seeds (the task is built with seed 0)
    cache_dir: str = ""  # the demo cache (base model and samples)
    minority: str = "brevity"  # what the minority prefers (a key of MINORITY_PREFERENCES)
    minority_share: float = 0.25  # the share of annotators in the minority group
    rl_method: str = "grpo"  # the RL method both policies are trained with
    rl_steps: int = 30  # its optimizer steps (the same budget for the baseline and MaxMin)
    num_samples: int = 4  # samples per prompt in RL
    eval_samples: int = 4  # samples per held-out prompt in the evaluation
    over: str = "batch"  # MaxMin's minimum: over the batch (the paper) or per sample
    scale: str = "std"  # the group rewards compared in units of their std on the training responses, or "none"
    progress: bool = False


def mixture_config(task: Path, out: Path, seed: int, progress: bool) -> dict:
    return {"method": "maxmin_reward_models", "model": {"name_or_path": str(task / "base")},
            "data": {"train": str(task / "pairs.jsonl"), "eval_size": 0.1},
            "reward_model": {"kind": "causal", "max_length": 96, "center_examples": 256},
            "mixture": {"num_groups": 2, "em_iterations": 5, "init_steps": 60, "m_step_steps": 30},
            "train": {"output_dir": str(out), "learning_rate": 1e-3, "schedule": "constant", "batch_size": 16,
                      "seed": seed, "overwrite": True, "progress": progress}}


def rl_config(exp: MaxMinExperiment, task: Path, out: Path, reward: dict, seed: int) -> dict:
    return {"method": exp.rl_method, "model": {"name_or_path": str(task / "base")},
            "data": {"train": str(task / "prompts.jsonl"), "max_prompt_length": 48},
            "rewards": [reward], "sampling": {"num_samples": exp.num_samples, "max_new_tokens": 24},
            "ppo": {"kl_coef": 0.05, "num_ppo_epochs": 2},
            "train": {"output_dir": str(out), "learning_rate": 5e-4, "batch_size": 16, "max_steps": exp.rl_steps,
                      "schedule": "constant", "seed": seed, "log_every": 1, "overwrite": True,
                      "progress": exp.progress}}


LEARNED = "learned"  # the eval's name for the mixture's min reward; its details are learned/group_<h>


def gold_rewards(model: str, task: Path, seed: int, exp: MaxMinExperiment, mixture: Path | None = None
                 ) -> dict[str, float]:
    """Mean reward of fresh samples on the held-out prompts under each group's true function; with ``mixture``
    (a mixture run's ``final/``) also under each learned group reward, scaled as MaxMin's minimum scales them
    (``learned/group_<h>``)."""
    from alignkit.config import from_dict
    from alignkit.eval.runner import EvalConfig, evaluate_model

    rewards = [{"kind": "vader", "name": MAJORITY},
               {"kind": "function", "function": MINORITY_PREFERENCES[exp.minority][0], "name": exp.minority}]
    if mixture is not None:
        rewards.append({"kind": "min", "path": str(mixture), "name": LEARNED, "over": exp.over, "scale": exp.scale})
    cfg = from_dict(EvalConfig, {
        "model": model, "prompts": str(task / "eval_prompts.jsonl"), "max_length": 96, "rewards": rewards,
        "sampling": {"num_samples": exp.eval_samples, "max_new_tokens": 24, "batch_size": 32, "seed": seed},
        "progress": exp.progress})
    result = evaluate_model(cfg, write=False)
    return {name: value["mean"] for name, value in result["rewards"].items()
            if name in (MAJORITY, exp.minority) or name.startswith(f"{LEARNED}/group_")}


def min_group_share(metrics: Path, num_groups: int) -> list[float]:
    """The share of an RL run's logged steps whose minimum was each group: ``reward/min_group`` of a step is
    the batch's group under ``over: batch`` (under ``over: sample`` it is a mean over samples, read rounded)."""
    steps = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    chosen = torch.tensor([s["reward/min_group"] for s in steps if "reward/min_group" in s]).round()
    return [float((chosen == h).float().mean()) if len(chosen) else float("nan") for h in range(num_groups)]


def run_seed(exp: MaxMinExperiment, task: Path, seed: int) -> dict[str, Any]:
    from alignkit.config import Config, from_dict
    from alignkit.train.run import run_train

    out = Path(exp.output_dir) / f"seed{seed}"
    torch.manual_seed(seed)
    run_train(from_dict(Config, mixture_config(task, out / "mixture", seed, exp.progress)))
    final = out / "mixture" / "final"
    mixture = json.loads((final / "mixture.json").read_text())
    pooled = {"kind": "model", "path": str(final / "pooled"), "name": "pooled"}
    egalitarian = {"kind": "min", "path": str(final), "name": "min", "over": exp.over, "scale": exp.scale}
    rows = {"start": gold_rewards(str(task / "base"), task, seed, exp, final)}
    for label, reward in (("baseline", pooled), ("maxmin", egalitarian)):
        run_train(from_dict(Config, rl_config(exp, task, out / label, reward, seed)))
        rows[label] = gold_rewards(str(out / label / "final"), task, seed, exp, final)
    return {"seed": seed, "minority": exp.minority, "rewards": rows, "clustering_accuracy": mixture.get("clustering_accuracy"),
            "min_group_share": min_group_share(out / "maxmin" / "metrics.jsonl", mixture["num_groups"]),
            "group_truth": mixture.get("group_truth"), "em_rounds": mixture["rounds"],
            "heldout_accuracy_mixture": mixture.get("heldout_accuracy_mixture"),
            "heldout_accuracy_pooled": mixture.get("heldout_accuracy_pooled")}


def _mean_sd(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    return f"{float(t.mean()):+.3f} ± {float(t.std()) if len(values) > 1 else 0.0:.3f}"


def format_table(results: list[dict]) -> str:
    """Markdown: per-group true reward of start / baseline / MaxMin (mean ± sd over seeds), EM's accuracy."""
    labels = {"start": "start (base model)", "baseline": "single reward (pooled BT) + RL", "maxmin": "MaxMin-RLHF"}
    minority = results[0].get("minority", "brevity") if results else "brevity"
    unit = MINORITY_PREFERENCES[minority][1]
    lines = [f"| policy | {MAJORITY} (majority, VADER) | {minority} (minority, {unit}) |", "|---|---|---|"]
    for key, label in labels.items():
        cells = [_mean_sd([r["rewards"][key][g] for r in results]) for g in (MAJORITY, minority)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += ["", "| seed | EM accuracy | baseline: " + MAJORITY + " / " + minority + " | MaxMin: " + MAJORITY + " / "
              + minority + " |", "|---|---|---|---|"]
    for r in results:
        acc = "-" if r["clustering_accuracy"] is None else f"{r['clustering_accuracy']:.2f}"
        both = [f"{r['rewards'][key][MAJORITY]:+.3f} / {r['rewards'][key][minority]:+.2f}" for key in ("baseline", "maxmin")]
        lines.append(f"| {r['seed']} | {acc} | {both[0]} | {both[1]} |")
    accuracy = [r["clustering_accuracy"] for r in results if r["clustering_accuracy"] is not None]
    if accuracy:
        lines.append("")
        lines.append(f"EM clustering accuracy (annotators): {_mean_sd(accuracy).lstrip('+')} over {len(accuracy)} "
                     f"seeds (per seed: {', '.join(f'{a:.2f}' for a in accuracy)})")
    learned = [r for r in results if sorted(r.get("group_truth") or []) == sorted([MAJORITY, minority])
               and "min_group_share" in r]  # each learned group matched to a different true group
    if learned:
        lines += ["", "What MaxMin's minimum saw: the learned group rewards of the held-out samples, in the units the "
                  "minimum compares, and the share of MaxMin's RL steps whose minimum was each group.", "",
                  f"| seed | learned, start: {MAJORITY} / {minority} | baseline | MaxMin | MaxMin's minimum: "
                  f"{MAJORITY} / {minority} |", "|---|---|---|---|---|"]
        for r in learned:
            order = [r["group_truth"].index(g) for g in (MAJORITY, minority)]  # learned group of each true group
            cells = [" / ".join(f"{r['rewards'][key].get(f'{LEARNED}/group_{h}', float('nan')):+.2f}" for h in order)
                     for key in ("start", "baseline", "maxmin")]
            share = " / ".join(f"{r['min_group_share'][h]:.0%}" for h in order)
            lines.append(f"| {r['seed']} | {cells[0]} | {cells[1]} | {cells[2]} | {share} |")
    return "\n".join(lines)


def run_experiment(exp: MaxMinExperiment) -> str:
    out = Path(exp.output_dir)
    task = out / "task"
    info = build_task(task, minority_share=exp.minority_share, cache_dir=exp.cache_dir, progress=exp.progress,
                      minority=exp.minority)
    log.info("maxmin task: %d pairs (%s)", info["pairs"], info["pairs_per_group"])
    results = []
    for seed in exp.seeds:
        results.append(run_seed(exp, task, seed))
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = format_table(results)
    (out / "table.md").write_text(table + "\n")
    return table
