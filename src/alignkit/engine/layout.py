"""Tensor layouts for scoring K responses per prompt.

Two layouts give the same log-probs (the engine tests check it against a naive
full-logits implementation):

* ``packed`` (prompt sharing): one row holds a prompt followed by its K responses;
  a block-causal mask lets each response see the prompt and its own earlier
  tokens only, and position ids restart after the prompt for every response.
  The prompt is computed once, so an extra response costs its own tokens only.
  Several prompt groups are packed into one row (first-fit decreasing) so that
  rows carry little padding; the row length is the one that minimises the
  estimated cost of padding plus attention (:func:`best_row_capacity`).
* ``padded``: one right- or left-padded row per (prompt, response) pair, for
  models whose attention does not accept a custom 4-D mask.

Either way the layout records, for every response token, the row and column of
the hidden state that predicts it (the previous token's position; for a
response's first token, the prompt's last token), its target id, and where it
goes in the ``[B, K, L]`` output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Layout:
    input_ids: torch.Tensor  # [R, T]
    position_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T] (padded) or [R, 1, T, T] bool (packed)
    pred_rows: torch.Tensor  # [n] row of the hidden state predicting each response token
    pred_cols: torch.Tensor  # [n] column of that hidden state
    targets: torch.Tensor  # [n] the response token ids
    flat_index: torch.Tensor  # [n] b * K + k of each token's response
    token_index: torch.Tensor  # [n] position of each token within its response

    @property
    def num_positions(self) -> int:
        return int(self.input_ids.numel())


class _Records:
    """Per-response-token index tensors, appended one response at a time (no per-token Python)."""

    def __init__(self):
        self.parts: list[torch.Tensor] = []

    def add(self, row: int, first_col: int, col: int, resp: list[int], flat: int) -> None:
        """Response ``resp`` at columns ``col..``; its first token is predicted from ``first_col``."""
        n = len(resp)
        j = torch.arange(n)
        pred_cols = torch.where(j == 0, first_col, col + j - 1)
        self.parts.append(torch.stack([torch.full((n,), row), pred_cols, torch.tensor(resp, dtype=torch.long),
                                       torch.full((n,), flat), j]))  # [5, n]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        t = torch.cat(self.parts, dim=1) if self.parts else torch.zeros(5, 0, dtype=torch.long)
        return tuple(t)


def padded_layout(
    prompts: list[list[int]], responses: list[list[list[int]]], width: int, pad_id: int, side: str = "right"
) -> Layout:
    """One row per (prompt, response); ``side`` chooses where the padding goes."""
    records = _Records()
    lengths = [len(prompt) + len(resp) for prompt, resps in zip(prompts, responses) for resp in resps]
    length = max(lengths, default=1)
    n_rows = max(len(lengths), 1)
    input_ids = torch.full((n_rows, length), pad_id, dtype=torch.long)
    attention = torch.zeros(n_rows, length, dtype=torch.long)
    position = torch.zeros(n_rows, length, dtype=torch.long)
    r = 0
    for b, (prompt, resps) in enumerate(zip(prompts, responses)):
        for k, resp in enumerate(resps):
            seq = prompt + resp
            offset = length - len(seq) if side == "left" else 0
            input_ids[r, offset : offset + len(seq)] = torch.tensor(seq)
            attention[r, offset : offset + len(seq)] = 1
            position[r, offset : offset + len(seq)] = torch.arange(len(seq))
            if resp:
                first = offset + len(prompt)
                records.add(r, first - 1, first, resp, b * width + k)
            r += 1
    return Layout(input_ids, position, attention, *records.tensors())


def _pack_groups(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group indices into rows of at most ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for g in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for r, free in enumerate(room):
            if sizes[g] <= free:
                rows[r].append(g)
                room[r] -= sizes[g]
                break
        else:
            rows.append([g])
            room.append(capacity - sizes[g])
    return rows


def packing_cost(sizes: list[int], capacity: int, attention_span: float) -> float:
    """Estimated cost of packing groups of ``sizes`` tokens into rows of ``capacity``:
    ``R x T x (1 + T / attention_span)`` for ``R`` rows padded to the longest, ``T``.

    Every position of a row costs the layers' matmuls whether it holds a token or padding
    (``R x T``), and each also attends to all ``T`` positions of its row, masked or not
    (``R x T^2 / attention_span``). ``attention_span`` is the row length at which attention
    costs as much as the matmuls, :func:`attention_span` of the model.
    """
    packing = _pack_groups(sizes, capacity)
    length = max(sum(sizes[g] for g in row) for row in packing)
    return len(packing) * length * (1 + length / attention_span)


def best_row_capacity(sizes: list[int], attention_span: float) -> int:
    """The row capacity (between the largest group and all groups in one row) of least
    :func:`packing_cost`. Example: groups of 197, 144, 112 and 101 tokens in rows of 197
    take 4 rows (788 positions, 30% padding); at span 3000 one row of 554 costs
    ``554 x (1 + 554 / 3000) = 656`` against ``788 x (1 + 197 / 3000) = 840``, so they share one row."""
    if not sizes:
        return 1
    total, largest = sum(sizes), max(sizes)
    # rows of total / n tokens for n = 1, 2, 3, 4, 6, 8, 12, 16, ...: a few dozen packings even for
    # thousands of groups (each packing is first-fit decreasing, quadratic in the groups)
    counts = sorted({c for k in range(64) for c in (2**k, 3 * 2**k) if c <= len(sizes)})
    candidates = {largest} | {max(largest, -(-total // n)) for n in counts}
    return min(sorted(candidates), key=lambda c: packing_cost(sizes, c, attention_span))


def packed_layout(
    prompts: list[list[int]],
    responses: list[list[list[int]]],
    width: int,
    pad_id: int,
    row_capacity: int | None = None,
    attention_span: float | None = None,
) -> Layout:
    """Prompt-shared rows with a block-causal mask (see the module docstring).

    Rows hold ``row_capacity`` tokens when given, else the :func:`best_row_capacity` for
    ``attention_span`` when given, else the largest prompt group (one group per row at most
    as long as it).
    """
    sizes = [len(p) + sum(len(r) for r in rs) for p, rs in zip(prompts, responses)]
    if row_capacity is None and attention_span is not None:
        row_capacity = best_row_capacity(sizes, attention_span)
    capacity = max(row_capacity or 0, max(sizes, default=1))
    packing = _pack_groups(sizes, capacity)
    length = max(sum(sizes[g] for g in row) for row in packing) if packing else 1
    n_rows = max(len(packing), 1)
    input_ids = torch.full((n_rows, length), pad_id, dtype=torch.long)
    position = torch.zeros(n_rows, length, dtype=torch.long)
    # Per position: which prompt group it belongs to (-1: padding) and which segment
    # (0: the prompt, k + 1: response k). Attention is allowed within a group, to
    # earlier positions, and only to the prompt or the same segment.
    group = torch.full((n_rows, length), -1, dtype=torch.long)
    segment = torch.zeros(n_rows, length, dtype=torch.long)
    records = _Records()
    for r, row in enumerate(packing):
        col = 0
        for g in row:
            prompt, resps = prompts[g], responses[g]
            p_len = len(prompt)
            input_ids[r, col : col + p_len] = torch.tensor(prompt)
            position[r, col : col + p_len] = torch.arange(p_len)
            group[r, col : col + sizes[g]] = g
            last_prompt_col = col + p_len - 1
            col += p_len
            for k, resp in enumerate(resps):
                n = len(resp)
                input_ids[r, col : col + n] = torch.tensor(resp)
                position[r, col : col + n] = torch.arange(p_len, p_len + n)
                segment[r, col : col + n] = k + 1
                if n:
                    records.add(r, last_prompt_col, col, resp, g * width + k)
                col += n
    same_group = group[:, :, None] == group[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    visible_segment = (segment[:, None, :] == 0) | (segment[:, :, None] == segment[:, None, :])
    allowed = same_group & causal & visible_segment & (group[:, None, :] >= 0)
    allowed |= torch.eye(length, dtype=torch.bool)  # padding attends to itself: no all-masked rows (NaN)
    return Layout(input_ids, position, allowed[:, None], *records.tensors())
