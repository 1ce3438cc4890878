"""The candidates of a sampling stage: B prompts with up to K responses each, as one typed record.

Built by :func:`alignkit.train.sampling.gather` (texts and token ids from every source),
scored, given log-probs when ranking needs them, handed WHOLE to the method's selector
(:data:`alignkit.train.selection.SELECTORS`), and written to ``samples.jsonl`` (one row per
prompt, the ``ranked`` data format plus token ids) from which a resumed run reads it back.

Ragged fields are lists (prompt ``b`` has ``len(responses[b])`` candidates); numbers are
``[B, K]`` tensors with ``mask`` True on the candidates that exist. Scores and log-probs
are float64, so that a Python float read from or written to the jsonl round-trips exactly;
selectors see them as float32. Pure: torch only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

Tensor = torch.Tensor
NUMBERS = ("scores", "logps", "ref_logps")  # [B, K] per-candidate values that may be present


@dataclass
class Candidates:
    prompts: list[Any]  # B prompts as in the data (text or chat messages)
    prompt_ids: list[list[int]]  # B tokenized prompts
    responses: list[list[Any]]  # B x k_b response texts
    response_ids: list[list[list[int]]]  # B x k_b tokenized responses (EOS kept when a sample ended)
    sources: list[list[str]]  # B x k_b: policy, dataset, or the model that sampled it
    mask: Tensor  # [B, K] bool: the candidate exists (a selector's view may also drop filtered ones)
    scores: Tensor | None = None  # [B, K] reward of each candidate (0 where masked)
    logps: Tensor | None = None  # [B, K] log pi(y|x) of the policy being trained
    ref_logps: Tensor | None = None  # [B, K] log pi_ref(y|x) of the starting policy
    kept: Tensor | None = None  # [B, K] bool: selected for training

    @classmethod
    def new(cls, prompts: list[Any], prompt_ids: list[list[int]], responses: list[list[Any]],
            response_ids: list[list[list[int]]], sources: list[list[str]]) -> Candidates:
        width = max((len(r) for r in responses), default=0)
        mask = torch.zeros(len(responses), width, dtype=torch.bool)
        for b, r in enumerate(responses):
            mask[b, : len(r)] = True
        return cls(list(prompts), list(prompt_ids), [list(r) for r in responses], [list(r) for r in response_ids],
                   [list(s) for s in sources], mask)

    @classmethod
    def of_scores(cls, scores: Tensor, mask: Tensor | None = None) -> Candidates:
        """Hand-made candidates with ``scores`` ``[B, K]`` (texts ``r{b}{k}``): for selectors' tests and examples."""
        B, K = scores.shape
        mask = torch.ones(B, K, dtype=torch.bool) if mask is None else mask
        ids = [[[20 + k, 1] for k in range(K)] for _ in range(B)]
        out = cls.new([f"p{b}" for b in range(B)], [[0, 10 + b] for b in range(B)],
                      [[f"r{b}{k}" for k in range(K)] for b in range(B)], ids, [["policy"] * K] * B)
        return replace(out, mask=mask, scores=scores)

    def __len__(self) -> int:
        return len(self.prompts)

    def counts(self) -> list[int]:
        return [len(r) for r in self.responses]

    def set_values(self, key: str, rows: list[list[float]]) -> None:
        """Set ``key`` (scores, logps or ref_logps) from one list of floats per prompt."""
        values = torch.zeros(self.mask.shape, dtype=torch.float64)
        for b, row in enumerate(rows):
            values[b, : len(row)] = torch.tensor(row, dtype=torch.float64)
        setattr(self, key, values)

    def values(self, key: str) -> list[list[float]]:
        """``key`` as one list of floats per prompt (its candidates only)."""
        table = getattr(self, key)
        return [table[b, :n].tolist() for b, n in enumerate(self.counts())]

    def cells(self) -> list[tuple[int, int]]:
        """``(b, k)`` of every candidate, prompt by prompt."""
        return [(b, k) for b, n in enumerate(self.counts()) for k in range(n)]

    # ------------------------------------------------------------ the samples jsonl

    def rows(self) -> list[dict[str, Any]]:
        """One ``samples.jsonl`` row per prompt: ``{prompt, responses, sources, prompt_ids, response_ids,
        scores[, logps, ref_logps][, kept]}``."""
        present = [k for k in NUMBERS if getattr(self, k) is not None]
        numbers = {k: self.values(k) for k in present}
        kept = [self.kept[b, :n].tolist() for b, n in enumerate(self.counts())] if self.kept is not None else None
        out = []
        for b in range(len(self)):
            row = {"prompt": self.prompts[b], "responses": self.responses[b], "sources": self.sources[b],
                   "prompt_ids": self.prompt_ids[b], "response_ids": self.response_ids[b]}
            row.update({k: numbers[k][b] for k in present})
            if kept is not None:
                row["kept"] = kept[b]
            out.append(row)
        return out

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Candidates:
        out = cls.new([r["prompt"] for r in rows], [r["prompt_ids"] for r in rows], [r["responses"] for r in rows],
                      [r["response_ids"] for r in rows], [r["sources"] for r in rows])
        for key in NUMBERS:
            if rows and all(key in r for r in rows):
                out.set_values(key, [r[key] for r in rows])
        if rows and all("kept" in r for r in rows):
            out.kept = torch.zeros(out.mask.shape, dtype=torch.bool)
            for b, r in enumerate(rows):
                out.kept[b, : len(r["kept"])] = torch.tensor(r["kept"], dtype=torch.bool)
        return out

    def write(self, path: Path) -> None:
        """Atomic: a run interrupted while writing leaves no half file."""
        write_jsonl(path, self.rows())

    @classmethod
    def read(cls, path: Path) -> Candidates:
        return cls.from_rows(read_jsonl(path))

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """The candidates of ``parts`` in order (e.g. every process's block), as one record."""
        return cls.from_rows([row for part in parts for row in part.rows()])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Atomic: a run interrupted while writing leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
