"""The select step of every sampling method, by hand: local and global ranking, RAFT eq. 5, RSO's rejection
sampling with scripted uniforms, random pairs, best/worst labelling, the filter mask."""

import math
import random

import pytest
import torch

from alignkit.train.candidates import Candidates
from alignkit.train.selection import (
    SELECTORS,
    Item,
    OnlineConfig,
    best_and_worst,
    filter_mask,
    global_ranking,
    kl_regularised,
    local_ranking,
    random_pairs,
    rso_accept,
)


class Scripted:
    """An RNG whose uniforms are given in advance."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


SCORES = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.0], [0.5, 0.5, 0.4]])
ALL = torch.ones(3, 3, dtype=torch.bool)


def test_local_ranking_keeps_the_best_of_each_prompt_and_the_first_of_equals():
    keep = local_ranking(SCORES, ALL)
    assert keep.tolist() == [[True, False, False], [False, True, False], [True, False, False]]


def test_global_ranking_keeps_the_best_over_all_prompts():
    # the 3 best of all 9: 0.9, 0.8 (both prompt 0), then 0.5 at [2, 0] (before the tied [2, 1])
    keep = global_ranking(SCORES, ALL, 3)
    assert keep.tolist() == [[True, True, False], [False, False, False], [True, False, False]]


def test_masked_candidates_are_never_kept():
    mask = ALL.clone()
    mask[0, 0] = False
    mask[1] = False  # a prompt with no candidate left keeps nothing
    assert local_ranking(SCORES, mask).tolist() == [[False, True, False], [False] * 3, [True, False, False]]
    assert global_ranking(SCORES, mask, 10).sum() == mask.sum()  # n_keep beyond the valid count keeps all valid


def test_raft_selector_local_and_global():
    rng = random.Random(0)
    local = SELECTORS["raft"].select(Candidates.of_scores(SCORES, ALL), OnlineConfig(ranking="local"), rng)
    assert [(it.row, it.indices, it.scores) for it in local] == [(0, [0], None), (1, [1], None), (2, [0], None)]
    # global: the top 1/K of the 9 samples, ceil(9 / 3) = 3 of them
    glob = SELECTORS["raft"].select(Candidates.of_scores(SCORES, ALL), OnlineConfig(ranking="global"), rng)
    assert [(it.row, it.indices) for it in glob] == [(0, [0]), (0, [1]), (2, [0])]


def test_kl_regularised_ranking_is_raft_eq5_by_hand():
    # r = [1.0, 0.5]; log pi/pi_ref = [2.0, 0.0]; beta = 0.5: [1 - 0.5 * 2, 0.5 - 0] = [0.0, 0.5]
    rewards = torch.tensor([[1.0, 0.5]])
    logps, ref = torch.tensor([[-3.0, -4.0]]), torch.tensor([[-5.0, -4.0]])
    ranked = kl_regularised(rewards, logps, ref, beta=0.5)
    torch.testing.assert_close(ranked, torch.tensor([[0.0, 0.5]]))
    assert local_ranking(ranked, torch.ones(1, 2, dtype=torch.bool)).tolist() == [[False, True]]  # the ranking flips
    torch.testing.assert_close(kl_regularised(rewards, logps, ref, beta=0.0), rewards)


def test_rso_accepts_by_hand_with_scripted_uniforms():
    # rewards [0, 1, 0.5], beta 1. Round 1: r_max = 1, thresholds exp(-1) = .368, exp(0) = 1, exp(-.5) = .607
    #   u = .5 >= .368 reject 0; u = .9 < 1 accept 1; u = .7 >= .607 reject 2.
    # Round 2 over [0, 2]: r_max = .5, thresholds exp(-.5) = .607, 1: u = .2 < .607 accept 0 -> 2 accepted, stop.
    rng = Scripted(0.5, 0.9, 0.7, 0.2)
    assert rso_accept([0.0, 1.0, 0.5], num_accepted=2, beta=1.0, rng=rng) == [1, 0]
    assert rng.draws == []  # candidate 2 was not looked at again once 2 were accepted


def test_rso_stops_when_the_candidates_run_out():
    # every round accepts at least the best remaining candidate (u < exp(0) = 1)
    assert sorted(rso_accept([0.3, 0.1, 0.2], num_accepted=8, beta=0.01, rng=random.Random(0))) == [0, 1, 2]
    assert rso_accept([], num_accepted=2, beta=1.0, rng=random.Random(0)) == []


def test_rso_beta_limits_greedy_and_uniform():
    rewards = [0.1, 0.9, 0.4, 0.7, 0.2]
    # beta -> 0: only the best remaining is accepted each round: the top rewards in order
    assert rso_accept(rewards, 3, beta=1e-6, rng=random.Random(1)) == [1, 3, 2]
    # beta -> inf: every threshold is ~1: the first candidates in order
    assert rso_accept(rewards, 3, beta=1e9, rng=random.Random(1)) == [0, 1, 2]


def test_rso_acceptance_rate_matches_exp_of_the_reward_gap():
    # 2 candidates, 1 accepted: candidate 0 (reward 0, r_max 1, beta 0.5) is accepted first with
    # probability exp(-2) = 0.135; otherwise candidate 1 (the max) is.
    rng = random.Random(0)
    hits = sum(rso_accept([0.0, 1.0], 1, beta=0.5, rng=rng) == [0] for _ in range(20000))
    assert hits / 20000 == pytest.approx(math.exp(-2), abs=0.01)


def test_random_pairs_are_disjoint_and_drop_the_odd_one():
    pairs = random_pairs([4, 5, 6, 7, 8], random.Random(0))
    flat = [i for p in pairs for i in p]
    assert len(pairs) == 2 and len(set(flat)) == 4 and set(flat) <= {4, 5, 6, 7, 8}


def test_rso_selector_labels_each_pair_better_first_and_skips_ties():
    scores = torch.tensor([[0.1, 0.9, 0.4, 0.7], [0.5, 0.5, 0.5, 0.5]])
    cfg = OnlineConfig(rso_beta=1e9, rso_num_accepted=4)  # accept all, then pair at random
    items = SELECTORS["rso"].select(Candidates.of_scores(scores, torch.ones(2, 4, dtype=torch.bool)), cfg,
                                     random.Random(3))
    assert len(items) == 2 and all(it.row == 0 for it in items)  # the all-tied prompt gives no pair
    for it in items:
        assert it.scores == [scores[0, it.indices[0]].item(), scores[0, it.indices[1]].item()]
        assert it.scores[0] > it.scores[1]
    assert sorted(i for it in items for i in it.indices) == [0, 1, 2, 3]


def test_best_and_worst_labelling():
    scores = torch.tensor([[0.2, 0.9, -0.5, 0.9], [0.3, 0.3, 0.3, 0.3], [1.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True] * 4, [False, True, True, True]])
    best, worst, differ = best_and_worst(scores, mask)
    assert best.tolist()[:2] == [1, 0] and worst.tolist()[0] == 2  # first of equals
    assert (best[2].item(), worst[2].item()) == (2, 1)  # the masked 1.0 is not the best
    assert differ.tolist() == [True, False, True]
    items = SELECTORS["iterative_dpo"].select(Candidates.of_scores(scores, mask), OnlineConfig(), None)
    assert [(it.row, it.indices, it.scores) for it in items] == [(0, [1, 2], [1.0, 0.0]), (2, [2, 1], [1.0, 0.0])]


def test_ranked_selector_keeps_every_valid_candidate_with_its_score():
    scores = torch.tensor([[0.2, 0.9, -0.5], [0.3, 0.3, 0.3]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    items = SELECTORS["online"].select(Candidates.of_scores(scores, mask), OnlineConfig(), None)
    assert len(items) == 1
    assert (items[0].row, items[0].indices) == (0, [0, 2])
    assert items[0].scores == pytest.approx([0.2, -0.5])


def test_filter_mask_calls_the_hook_with_prompts_responses_scores():
    seen = {}

    def no_shouting(prompts, responses, scores):
        seen["args"] = (prompts, responses, scores)
        return [not r.isupper() for r in responses]

    keep = filter_mask(no_shouting, ["p", "p"], ["GREAT!!!", "fine"], [0.9, 0.1])
    assert keep.tolist() == [False, True]
    assert seen["args"] == (["p", "p"], ["GREAT!!!", "fine"], [0.9, 0.1])
    with pytest.raises(ValueError, match="1 values for 2 responses"):
        filter_mask(lambda p, r, s: [True], ["p", "p"], ["a", "b"], [0.0, 0.0])


def test_every_selector_is_a_sampling_method():
    from alignkit.train.methods import all_methods

    methods = all_methods()
    assert {"raft", "rso", "online", "iterative_dpo"} <= set(SELECTORS)
    for name, spec in SELECTORS.items():
        assert methods[name].family == "sampling" and methods[name].default_update == spec.default_update
    assert Item(0, [1]).scores is None


def test_spin_pairs_the_data_response_against_the_policy_sample():
    """SPIN reads the candidates' sources, not their scores: prompt 0 has policy samples 0, 1 and the data's
    responses 2, 3 (2 filtered out): chosen 3, rejected 0. Prompt 1 has no data response: skipped."""
    from alignkit.errors import ConfigError

    cands = Candidates.new(["p0", "p1"], [[0], [1]], [["a", "b", "c", "d"], ["e", "f"]],
                           [[[5], [6], [7], [8]], [[9], [10]]],
                           [["policy", "policy", "dataset", "dataset"], ["policy", "policy"]])
    cands.set_values("scores", [[0.9, 0.8, 0.1, 0.2], [0.5, 0.4]])  # ignored: the data's response wins
    cands.mask[0, 2] = False
    items = SELECTORS["spin"].select(cands, OnlineConfig(sources=["policy", "dataset"]), None)
    assert [(it.row, it.indices, it.scores) for it in items] == [(0, [3, 0], [1.0, 0.0])]
    assert SELECTORS["spin"].reference == "previous" and SELECTORS["spin"].default_update == "dpo"
    with pytest.raises(ConfigError, match="online.sources: spin"):
        SELECTORS["spin"].check(OnlineConfig(sources=["policy"]), "dpo")
