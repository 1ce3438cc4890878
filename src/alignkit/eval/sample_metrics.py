"""What ``alignkit eval`` measures on given responses, models aside: every reward of every sample,
best-of-k by the unbiased estimator, RAFT's diversity block, and win rates against a baseline.

Pure functions over ``[P, K]`` score tensors (P prompts, K samples each) and texts; the runner
(:mod:`alignkit.eval.runner`) samples the responses and adds what needs a model (KL, perplexity,
preference accuracy), and ``alignkit compare`` scores datasets' responses with the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from alignkit.config.rewards import RewardSpec
from alignkit.errors import ConfigError, DataError
from alignkit.eval import metrics as M

if TYPE_CHECKING:
    from alignkit.eval.runner import EvalConfig


def powers_of_two(k_max: int) -> list[int]:
    """1, 2, 4, ... up to ``k_max``, and ``k_max`` itself when it is not a power of two."""
    ks, k = [], 1
    while k <= k_max:
        ks.append(k)
        k *= 2
    if k_max >= 1 and ks[-1] != k_max:
        ks.append(k_max)
    return ks


def best_of_k_weights(n: int, k: int) -> list[float]:
    """P(the i-th lowest of n samples is the best of a uniform random k-subset) = C(i-1, k-1) / C(n, k)."""
    total = math.comb(n, k)
    return [math.comb(i, k - 1) / total for i in range(n)]  # i = 0..n-1 is the (i+1)-th lowest


def best_of_k_curve(selector: torch.Tensor, rewards: dict[str, torch.Tensor], ks: Sequence[int]) -> dict:
    """Expected rewards of best-of-k selection, unbiased from n >= max(ks) samples per prompt.

    ``selector`` ``[P, n]`` ranks the samples (ties broken by position); ``rewards`` maps
    names to ``[P, n]``. Returns ``{"k": ks, "rewards": {name: {"mean": [..], "stderr": [..]}}}``
    with the mean and s.e. over prompts of each prompt's expected reward.
    """
    P, n = selector.shape
    order = torch.sort(selector.float(), dim=1, stable=True).indices  # [P, n] ascending
    out: dict[str, dict[str, list[float]]] = {name: {"mean": [], "stderr": []} for name in rewards}
    for k in ks:
        if not 1 <= k <= n:
            raise ValueError(f"best-of-{k} needs at least {k} samples per prompt, got {n}")
        w = torch.tensor(best_of_k_weights(n, k), dtype=torch.float64)  # [n]
        for name, r in rewards.items():
            sorted_r = r.double().gather(1, order)  # [P, n]
            mean, se = M.mean_and_stderr((sorted_r * w).sum(1).tolist())
            out[name]["mean"].append(mean)
            out[name]["stderr"].append(se)
    return {"k": list(ks), "rewards": out}


def per_prompt_stats(scores: torch.Tensor) -> dict[str, float]:
    """Mean of ``[P, K]`` scores and its standard error over the P per-prompt means."""
    mean, se = M.mean_and_stderr(scores.double().mean(1).tolist())
    return {"mean": mean, "stderr": se}


def text_metrics(texts: Sequence[str]) -> dict[str, float]:
    """RAFT's diversity block and the mean length (words) of ``texts``."""
    return {
        "msttr_100": M.msttr(texts, 100),
        "distinct_1": M.distinct_n(texts, 1),
        "distinct_2": M.distinct_n(texts, 2),
        "unique_1": M.unique_n(texts, 1),
        "unique_2": M.unique_n(texts, 2),
        "length": M.mean_length(texts),
    }


def build_rewards(specs: Sequence[RewardSpec]) -> dict:
    """One :class:`Reward` per spec, keyed by its name (names must differ)."""
    from alignkit.rewards import build_reward

    rewards = {}
    for i, spec in enumerate(specs):
        reward = build_reward(spec)
        if reward.name in rewards:
            raise ConfigError(
                f"rewards[{i}].name: {reward.name!r} is used twice; give each reward a distinct name"
            )
        rewards[reward.name] = reward
    return rewards


def score_all(rewards: dict, prompts: list[str], responses: list[list[str]]) -> dict[str, torch.Tensor]:
    """Every reward on every response: ``{name: [P, K]}`` (K the same for every prompt), plus each
    reward's diagnostics as ``{name}/{detail}`` (a fine-grained model's ``error_rate``)."""
    K = len(responses[0]) if responses else 0
    flat_p = [p for p, rs in zip(prompts, responses) for _ in rs]
    flat_r = [r for rs in responses for r in rs]
    out = {}
    for name, reward in rewards.items():
        score, details = reward.score_with_details(flat_p, flat_r)
        out[name] = score.float().view(len(prompts), K)
        out.update({f"{name}/{k}": v.float().view(len(prompts), K) for k, v in details.items()})
    return out


def judge_win_rate(
    cfg: EvalConfig, prompts: list[str], responses: list[list[str]], baseline: list[str | None], rewards: dict
) -> dict:
    """Every response against its prompt's baseline, judged per ``cfg.judge``."""
    from alignkit.rewards.preference import PreferenceJudge
    from alignkit.rewards.simple import import_function

    pairs = [(p, r, b) for p, rs, b in zip(prompts, responses, baseline) if b is not None for r in rs]
    ps, rs, bs = (list(x) for x in zip(*pairs)) if pairs else ([], [], [])
    if isinstance(cfg.judge, str):
        verdict = torch.as_tensor(import_function(cfg.judge)(ps, rs, bs), dtype=torch.float64).flatten()
        if verdict.numel() != len(ps):
            raise DataError(f"judge {cfg.judge!r} returned {verdict.numel()} verdicts for {len(ps)} pairs")
        result = M.win_rate(verdict.tolist(), [0.0] * len(ps))
        name = cfg.judge
    else:
        judge = next(iter(build_rewards([cfg.judge]).values()))
        judge = rewards.get(judge.name, judge)
        if isinstance(judge, PreferenceJudge):  # P(response beats baseline) - 1/2: > 0 wins
            result = M.win_rate((judge.compare(ps, rs, bs) - 0.5).tolist(), [0.0] * len(ps), cfg.tie_eps)
        else:
            result = M.win_rate(judge.score(ps, rs).tolist(), judge.score(ps, bs).tolist(), cfg.tie_eps)
        name = judge.name
    return {**result, "judge": name, "baseline": cfg.baseline}


def evaluate_texts(
    cfg: EvalConfig,
    prompts: list[str],
    responses: list[list[str]],
    rewards: dict,
    baseline: list[str | None] | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rewards, diversity, length and win rate of given responses ``[P][K]`` (models or datasets)."""
    scores = score_all(rewards, prompts, responses)
    result: dict[str, Any] = {
        "n_prompts": len(prompts),
        "samples_per_prompt": len(responses[0]) if responses else 0,
    }
    result["rewards"] = {name: per_prompt_stats(s) for name, s in scores.items()}
    result.update(text_metrics([r for rs in responses for r in rs]))
    if baseline is not None and cfg.judge is not None:
        result["win_rate"] = judge_win_rate(cfg, prompts, responses, baseline, rewards)
    return result, scores
