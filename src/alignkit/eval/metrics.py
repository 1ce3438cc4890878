"""Pure evaluation metrics: text diversity, length, perplexity, win rates, Pareto fronts.

Standard library only. Text metrics follow the diversity block of RAFT (Dong et al.
2023, Table 3), which RAFT took from RL4LMs (Ramamurthy et al. 2023), whose
``DiversityMetrics`` wraps GEM-metrics (``gem_metrics/msttr.py``, ``gem_metrics/ngrams.py``).

Tokenisation: by default a text is lower-cased and split on whitespace
(``text.lower().split()``). GEM-metrics lower-cases and uses an NLTK word tokenizer,
which also splits punctuation off words, so numbers differ slightly from theirs on
punctuated text. Pass ``tokenizer=`` (a function ``str -> list[str]``, applied to the raw
text, so it does its own normalisation) to use another one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain

Tokenizer = Callable[[str], list[str]]


def _tokens(text: str, tokenizer: Tokenizer | None) -> list[str]:
    return text.lower().split() if tokenizer is None else list(tokenizer(text))


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _ngram_counts(texts: Sequence[str], n: int, tokenizer: Tokenizer | None) -> Counter:
    """Counts of the n-grams inside each text (never spanning two texts), over the corpus."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return Counter(chain.from_iterable(_ngrams(_tokens(t, tokenizer), n) for t in texts))


def _as_list(x) -> list:
    """A tensor, array or sequence as nested Python lists."""
    return x.tolist() if hasattr(x, "tolist") else list(x)


# ---------------------------------------------------------------- text diversity and length


def msttr(texts: Sequence[str], window: int = 100, tokenizer: Tokenizer | None = None) -> float:
    """Mean Segmental Type-Token Ratio (Johnson 1944), as GEM-metrics' ``MSTTR``.

    All tokens are concatenated and cut into consecutive segments of ``window`` tokens;
    the incomplete last segment is dropped; the result is the mean of
    ``distinct tokens / window`` over the segments. When there is no full segment this
    returns the plain TTR of all tokens (GEM-metrics returns NaN there), and NaN when
    there are no tokens at all.
    """
    tokens = [tok for text in texts for tok in _tokens(text, tokenizer)]
    if not tokens:
        return float("nan")
    segments = [tokens[i : i + window] for i in range(0, len(tokens) - window + 1, window)]
    if not segments:
        return len(set(tokens)) / len(tokens)
    return sum(len(set(seg)) / window for seg in segments) / len(segments)


def distinct_n(texts: Sequence[str], n: int, tokenizer: Tokenizer | None = None) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams / total n-grams over the corpus.

    N-grams are taken within each text, never across two texts (GEM-metrics' ``NGramStats``).
    0.0 when there is no n-gram.
    """
    counts = _ngram_counts(texts, n, tokenizer)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def unique_n(texts: Sequence[str], n: int, tokenizer: Tokenizer | None = None) -> int:
    """Unique-n: the number of n-grams that occur exactly once in the whole corpus.

    The definition of GEM-metrics' ``NGramStats`` ("unique-N: number of N-grams that only
    occur once in the whole data"), which RL4LMs' ``DiversityMetrics`` reports and RAFT
    copies. Not the number of distinct n-grams (that is GEM's ``vocab_size-N``).
    """
    return sum(1 for c in _ngram_counts(texts, n, tokenizer).values() if c == 1)


def mean_length(texts: Sequence[str], tokenizer: Tokenizer | None = None) -> float:
    """Mean number of tokens per text (whitespace tokens by default); NaN for no texts."""
    if not texts:
        return float("nan")
    return sum(len(_tokens(t, tokenizer)) for t in texts) / len(texts)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """``exp(total_nll / total_tokens)``: total negative log-likelihood (nats) per token."""
    total_nll, total_tokens = float(total_nll), float(total_tokens)
    if total_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return float("inf")


# ---------------------------------------------------------------- scores


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``s / sqrt(n)`` with the sample std ``s`` (divisor n - 1).

    One value gives stderr NaN (the sample std is undefined; 0 would claim certainty);
    no values give ``(nan, nan)``.
    """
    xs = [float(v) for v in _as_list(values)]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(xs) / n
    if n == 1:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


def win_rate(
    scores_model: Sequence[float], scores_baseline: Sequence[float], tie_eps: float = 0.0
) -> dict[str, float]:
    """Paired comparison of two models' scores on the same prompts.

    Prompt i is a win when ``model_i - baseline_i > tie_eps``, a loss when it is
    ``< -tie_eps``, else a tie. ``win_rate = (win + tie / 2) / n`` (NaN for n = 0).
    Returns ``{"win", "tie", "loss", "win_rate", "n"}``.
    """
    a, b = _as_list(scores_model), _as_list(scores_baseline)
    if len(a) != len(b):
        raise ValueError(f"win_rate needs paired scores, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    win = sum(d > tie_eps for d in diffs)
    loss = sum(d < -tie_eps for d in diffs)
    n = len(diffs)
    tie = n - win - loss
    rate = (win + 0.5 * tie) / n if n else float("nan")
    return {"win": win, "tie": tie, "loss": loss, "win_rate": rate, "n": n}


def preference_accuracy(scores, targets, mask=None) -> float:
    """Pairwise ranking accuracy of predicted ``scores [N, K]`` against ``targets [N, K]``.

    Both are higher-is-better (pass ``-rank`` for ranks where 1 is best). Over every
    pair ``i < j`` of valid responses of a row with ``targets_i != targets_j`` (tied
    targets say nothing), a pair counts 1 when the scores order it as the targets do,
    0 when reversed, and 1/2 when the scores tie. NaN when there is no such pair.
    Accepts tensors, arrays or nested lists.
    """
    scores, targets = _as_list(scores), _as_list(targets)
    mask = [[True] * len(row) for row in scores] if mask is None else _as_list(mask)
    correct, pairs = 0.0, 0
    for s, t, m in zip(scores, targets, mask):
        valid = [k for k in range(len(s)) if m[k]]
        for a, i in enumerate(valid):
            for j in valid[a + 1 :]:
                if t[i] == t[j]:
                    continue
                pairs += 1
                agree = (s[i] - s[j]) * (t[i] - t[j])
                correct += 1.0 if agree > 0 else 0.5 if s[i] == s[j] else 0.0
    return correct / pairs if pairs else float("nan")


def kendall_tau(scores, targets, mask=None) -> float:
    """Mean over rows of Kendall's tau-b between predicted ``scores [N, K]`` and ``targets [N, K]``.

    Per row, over its valid responses: ``(C - D) / sqrt((n0 - t_s) (n0 - t_t))`` with C (D)
    the pairs both order alike (oppositely), n0 the number of pairs, t_s and t_t the pairs
    tied in scores and in targets (tau-b: ties, common in human rankings, count against
    neither side). Rows whose targets (or scores) are all tied have no tau and are skipped;
    NaN when no row has one. Accepts tensors, arrays or nested lists.
    """
    scores, targets = _as_list(scores), _as_list(targets)
    mask = [[True] * len(row) for row in scores] if mask is None else _as_list(mask)
    taus = []
    for s, t, m in zip(scores, targets, mask):
        valid = [k for k in range(len(s)) if m[k]]
        concordant = discordant = tied_s = tied_t = pairs = 0
        for a, i in enumerate(valid):
            for j in valid[a + 1 :]:
                pairs += 1
                tied_s += s[i] == s[j]
                tied_t += t[i] == t[j]
                sign = (s[i] - s[j]) * (t[i] - t[j])
                concordant += sign > 0
                discordant += sign < 0
        denom = math.sqrt((pairs - tied_s) * (pairs - tied_t))
        if denom > 0:
            taus.append((concordant - discordant) / denom)
    return sum(taus) / len(taus) if taus else float("nan")


def error_class_metrics(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """Accuracy and the error class's precision, recall and F1 of per-segment predictions (1 = error).

    As Fine-Grained RLHF reports its fine-grained reward models (Wu et al. 2023, table 6).
    Precision (recall) is 0 when nothing is predicted (labelled) an error; F1 is 0 when both are 0.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions but {len(gold)} labels")
    tp = sum(1 for p, g in zip(predicted, gold) if p == 1 and g == 1)
    n_pred, n_gold = sum(p == 1 for p in predicted), sum(g == 1 for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else float("nan")
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


def accuracy_threshold(p_error: Sequence[float], gold: Sequence[int]) -> float:
    """The decision threshold t on p(error) whose predictions ``p > t`` are most accurate on ``gold``.

    Candidates are 0.5 and the midpoints between consecutive distinct probabilities (every distinct
    prediction of the segments); ties go to the candidate nearest 0.5. Choose it on validation
    segments, never on the test ones. Without segments, 0.5.
    """
    if len(p_error) != len(gold):
        raise ValueError(f"{len(p_error)} probabilities but {len(gold)} labels")
    values = sorted(set(float(p) for p in p_error))
    candidates = [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:])]
    if values:
        candidates += [values[0] - 1e-6, values[-1]]  # everything an error / nothing an error

    def correct(t: float) -> int:
        return sum((p > t) == (g == 1) for p, g in zip(p_error, gold))

    return max(candidates, key=lambda t: (correct(t), -abs(t - 0.5)))


# ---------------------------------------------------------------- multi-objective


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, every objective maximised.

    ``q`` dominates ``p`` when ``q >= p`` in every coordinate and ``q > p`` in one;
    equal points do not dominate each other, so duplicates on the front are all kept.
    """
    pts = [tuple(float(v) for v in p) for p in points]

    def dominates(q, p):
        return all(a >= b for a, b in zip(q, p)) and any(a > b for a, b in zip(q, p))

    return [i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)]


def best_for_preference(points: Sequence[Sequence[float]], mu: Sequence[float]) -> int:
    """Index of the point maximising ``sum_i mu_i * R_i`` (the first one on ties).

    The selection step of rewarded soups (Rame et al. 2023): for a user preference
    ``mu`` over rewards, pick the interpolation whose rewards score best.
    """
    if not points:
        raise ValueError("best_for_preference needs at least one point")
    mu = [float(m) for m in mu]

    def utility(p):
        if len(p) != len(mu):
            raise ValueError(f"point {p} has {len(p)} rewards, mu has {len(mu)}")
        return sum(m * float(r) for m, r in zip(mu, p))

    utilities = [utility(p) for p in points]
    return max(range(len(points)), key=lambda i: (utilities[i], -i))


def simplex_grid(n_models: int, steps: int) -> list[tuple[float, ...]]:
    """Every weight vector ``lambda`` of length ``n_models`` with entries in
    ``{0, 1/steps, ..., 1}`` summing to 1: the interpolation grid of rewarded soups.

    There are ``C(steps + n_models - 1, n_models - 1)`` of them (stars and bars),
    listed with the first weight increasing.
    """
    if n_models < 1 or steps < 1:
        raise ValueError("simplex_grid needs n_models >= 1 and steps >= 1")

    def compositions(total: int, parts: int):  # tuples of `parts` ints >= 0 summing to `total`
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    return [tuple(k / steps for k in c) for c in compositions(steps, n_models)]
