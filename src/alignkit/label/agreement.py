"""Agreement between annotators: pure functions over plain values, no database.

- :func:`krippendorff_alpha` (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"):
  ``alpha = 1 - D_o / D_e`` from the coincidence matrix of the values that annotators gave
  the same unit, with the nominal, ordinal, interval or ratio difference function.
- :func:`pairwise_agreement`: the fraction of (unit, annotator pair) comparisons that agree.
- :func:`majority_agreement`: for one annotator, the fraction of units where their value
  equals the majority value of the other annotators (units without a strict majority skipped).
- :func:`span_f1`: character overlap F1 of two sets of typed spans.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations, permutations

LEVELS = ("nominal", "ordinal", "interval", "ratio")

Units = Mapping[Hashable, Mapping[str, Hashable]]  # unit -> {annotator: value}


def _delta2(level: str, c, k, counts: Mapping, order: Sequence) -> float:
    """Squared difference of two values (Krippendorff 2011, section E)."""
    if c == k:
        return 0.0
    if level == "nominal":
        return 1.0
    if level == "interval":
        return float(c - k) ** 2
    if level == "ratio":
        return ((c - k) / (c + k)) ** 2
    # ordinal: (sum of n_g for g from c to k, minus half of n_c and n_k)^2
    i, j = sorted((order.index(c), order.index(k)))
    between = sum(counts[g] for g in order[i : j + 1])
    return (between - (counts[c] + counts[k]) / 2) ** 2


def krippendorff_alpha(units: Iterable[Iterable], level: str = "nominal") -> float:
    """Krippendorff's alpha of the values given to each unit (``None`` = no value).

    ``units`` is one sequence of values per unit (one entry per annotator, ``None`` where an
    annotator gave none). Units with fewer than 2 values are not pairable and are dropped.
    With ``m_u`` values in unit u, the coincidence matrix is
    ``o_ck = sum_u (number of ordered c-k pairs in u) / (m_u - 1)``, ``n_c = sum_k o_ck``,
    ``n = sum_c n_c``, and::

        alpha = 1 - (n - 1) * sum_ck o_ck d2(c, k) / sum_ck n_c n_k d2(c, k)

    Returns ``nan`` when there is no pairable unit or every value is the same (D_e = 0:
    agreement cannot be told apart from chance).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    coincidences: Counter = Counter()
    for unit in units:
        values = [v for v in unit if v is not None]
        if len(values) < 2:
            continue
        for c, k in permutations(values, 2):
            coincidences[(c, k)] += 1.0 / (len(values) - 1)
    counts: Counter = Counter()
    for (c, _), o in coincidences.items():
        counts[c] += o
    n = sum(counts.values())
    if n == 0:
        return math.nan
    order = sorted(counts)
    observed = sum(o * _delta2(level, c, k, counts, order) for (c, k), o in coincidences.items())
    expected = sum(counts[c] * counts[k] * _delta2(level, c, k, counts, order) for c in order for k in order)
    if expected == 0:
        return math.nan
    return 1.0 - (n - 1) * observed / expected


def pairwise_agreement(units: Units) -> float:
    """Fraction of (unit, pair of annotators) whose two values are equal; ``nan`` with no pair."""
    same = total = 0
    for values in units.values():
        for a, b in combinations(sorted(values), 2):
            total += 1
            same += values[a] == values[b]
    return same / total if total else math.nan


def majority_agreement(units: Units, annotator: str) -> float:
    """How often ``annotator`` agrees with the strict majority of the others on a unit they labelled."""
    agree = total = 0
    for values in units.values():
        if annotator not in values:
            continue
        others = Counter(v for a, v in values.items() if a != annotator)
        if not others:
            continue
        top, n_top = others.most_common(1)[0]
        if n_top * 2 <= sum(others.values()):  # no strict majority among the others
            continue
        total += 1
        agree += values[annotator] == top
    return agree / total if total else math.nan


def span_chars(spans: Iterable[tuple[int, int, str]]) -> set[tuple[int, str]]:
    """The (character index, category) pairs that a list of ``(start, end, category)`` spans covers."""
    return {(i, cat) for start, end, cat in spans for i in range(start, end)}


def span_f1(a: Iterable[tuple[int, int, str]], b: Iterable[tuple[int, int, str]]) -> float:
    """Character overlap F1 of two span lists, category by category: ``2|A & B| / (|A| + |B|)``.

    Two annotators who both marked nothing agree fully (1.0).
    """
    chars_a, chars_b = span_chars(a), span_chars(b)
    if not chars_a and not chars_b:
        return 1.0
    return 2 * len(chars_a & chars_b) / (len(chars_a) + len(chars_b))
