"""Candidates: ragged texts and ids plus [B, K] tensors, to and from the samples jsonl, handed whole to selectors."""

import random

import torch

from alignkit.config.sampling import OnlineConfig
from alignkit.train.candidates import Candidates
from alignkit.train.selection import SELECTORS, Item, register_selector


def two_prompts() -> Candidates:
    """Prompt 0 has three candidates, prompt 1 two (e.g. a dataset row with fewer responses)."""
    cands = Candidates.new(["p0", "p1"], [[0, 10], [0, 11]], [["a", "b", "c"], ["d", "e"]],
                           [[[5, 1], [6, 1], [7, 1]], [[8, 1], [9]]], [["policy"] * 3, ["dataset"] * 2])
    cands.set_values("scores", [[0.1, 0.7, 0.3], [1 / 3, -2.5]])
    return cands


def test_ragged_rows_become_masked_tensors():
    cands = two_prompts()
    assert len(cands) == 2 and cands.counts() == [3, 2] and cands.cells()[-1] == (1, 1)
    assert cands.mask.tolist() == [[True, True, True], [True, True, False]]
    assert cands.scores.dtype == torch.float64 and cands.scores[1, 2] == 0  # padding
    assert cands.values("scores") == [[0.1, 0.7, 0.3], [1 / 3, -2.5]]  # the same Python floats back


def test_the_samples_jsonl_round_trips_exactly(tmp_path):
    cands = two_prompts()
    cands.set_values("logps", [[-1.0, -2.0, -3.0], [-4.0, -5.0]])
    cands.kept = torch.tensor([[False, True, False], [True, False, False]])
    cands.write(tmp_path / "samples.jsonl")
    rows = Candidates.read(tmp_path / "samples.jsonl").rows()
    assert rows == cands.rows()
    assert list(rows[1]) == ["prompt", "responses", "sources", "prompt_ids", "response_ids", "scores", "logps", "kept"]
    assert rows[1]["scores"] == [1 / 3, -2.5] and rows[1]["kept"] == [True, False]
    assert "ref_logps" not in rows[0]  # only what was computed is written


def test_concat_joins_blocks_of_different_widths_in_order():
    one = Candidates.new(["p2"], [[0, 12]], [["f"]], [[[4, 1]]], [["policy"]])
    one.set_values("scores", [[0.5]])
    joined = Candidates.concat([two_prompts(), one])
    assert joined.prompts == ["p0", "p1", "p2"] and joined.mask.shape == (3, 3)
    assert joined.values("scores")[2] == [0.5]


def test_a_selector_receives_the_candidates_whole(monkeypatch):
    """A selector can read more than scores: here the log-probs (best-of-K by likelihood, say)."""
    monkeypatch.setattr("alignkit.train.selection.SELECTORS", dict(SELECTORS))
    from alignkit.train import selection

    @register_selector("most_likely", default_update="sft")
    def most_likely(candidates: Candidates, cfg, rng) -> list[Item]:
        logps = candidates.logps.masked_fill(~candidates.mask, float("-inf"))
        return [Item(b, [int(logps[b].argmax())]) for b in range(len(candidates))]

    cands = two_prompts()
    cands.set_values("logps", [[-3.0, -1.0, -2.0], [-0.5, -4.0]])
    items = selection.SELECTORS["most_likely"].select(cands, OnlineConfig(), random.Random(0))
    assert [(it.row, it.indices) for it in items] == [(0, [1]), (1, [0])]
