"""Nash-MD and XPO as sampling methods: their select steps by hand, their config errors, XPO with alpha 0
being alignkit's DPO update exactly, and both shipped configs running end to end on the tiny task."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from alignkit.config import load_config
from alignkit.data.schema import TokenizedExample
from alignkit.engine import SequenceScorer
from alignkit.errors import ConfigError
from alignkit.models.reference import FrozenReference
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.train.candidates import Candidates
from alignkit.train.nash_xpo import NashMDMethod, XPOMethod, select_nash_md, select_xpo
from alignkit.train.preference import PreferenceMethod
from alignkit.train.run import run_train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["online.prompts_per_stage=3", "sampling.num_samples=2", "sampling.max_new_tokens=6", "train.progress=false"]


def candidates(sources, scores):
    B, K = len(scores), len(scores[0])
    out = Candidates.new([f"p{b}" for b in range(B)], [[0, 10 + b] for b in range(B)],
                         [[f"r{b}{k}" for k in range(K)] for b in range(B)],
                         [[[20 + k, 1] for k in range(K)] for _ in range(B)], [list(sources)] * B)
    out.scores = torch.tensor(scores)
    return out


def test_nash_md_pairs_the_i_th_policy_sample_with_the_i_th_mixture_sample():
    """Scores (policy 1, mixture 0, policy 0, mixture 2): pairs (0, 1) with P = sigmoid(1) = 0.7311 and (2, 3)
    with P = sigmoid(-2) = 0.1192."""
    items = select_nash_md(candidates(["policy", "mixture", "policy", "mixture"], [[1.0, 0.0, 0.0, 2.0]]), None, None)
    assert [it.indices for it in items] == [[0, 1], [2, 3]]
    p = 1 / (1 + math.exp(-1))
    assert items[0].scores == pytest.approx([p, 1 - p])
    assert items[1].scores[0] == pytest.approx(1 / (1 + math.exp(2)))
    far = select_nash_md(candidates(["policy", "mixture"], [[-1e6, 1e6]]), None, None)
    assert far[0].scores == [0.0, 1.0]


def test_xpo_ranks_policy_against_reference_and_a_tie_goes_to_the_policy():
    """Row 0: policy 0.2 < reference 0.9, so (reference, policy, reference). Row 1: a tie, so the policy sample wins."""
    items = select_xpo(candidates(["policy", "reference"], [[0.2, 0.9], [0.5, 0.5]]), None, None)
    assert [it.indices for it in items] == [[1, 0, 1], [0, 1, 1]]
    assert all(it.scores == [1.0, 0.0, 0.0] for it in items)


@pytest.mark.parametrize("config,overrides,key", [
    ("nash_md_tiny", ["online.sources=[policy]"], "online.sources: this method pairs a policy sample with a mixture"),
    ("xpo_tiny", ["online.sources=[policy, mixture]"], "online.sources: .* reference sample"),
    ("xpo_tiny", ["online.loss=dpo", "online.loss_args={beta: 0.1}"], "online.loss: this method's pairs are made for its own update 'xpo'"),
    ("xpo_tiny", ["online.loss_args={gamma: 1}"], "online.loss_args.gamma: method 'xpo' has no hyper-parameter"),
    ("nash_md_tiny", ["online.mixture_coef=1.5"], "online.mixture_coef"),
    ("nash_md_tiny", ["online.loss_args={beta: 0}"], "online.loss_args.beta"),
])
def test_config_errors_name_the_key(tmp_path, config, overrides, key):
    with pytest.raises(ConfigError, match=key):
        run_train(load_config(CONFIGS / f"{config}.yaml", [f"train.output_dir={tmp_path}", *SMALL, *overrides]))


@pytest.fixture(scope="module")
def tiny():
    tok = build_tiny_tokenizer()
    policy = build_tiny_model(tok)
    reference = FrozenReference(copy.deepcopy(policy), tok.pad_token_id)
    with torch.no_grad():  # a policy that has moved away from its reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    return SequenceScorer(policy), reference, tok


def xpo_examples(tok):
    a, b, c = (tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in ("good film", "bad", "ok then"))
    prompt = tok("The movie was")["input_ids"]
    return [TokenizedExample(prompt, [a, b, b], [1.0, 0.0, 0.0]), TokenizedExample(prompt, [c, a, c], [1.0, 0.0, 0.0])]


def grads(module):
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


def test_xpo_with_alpha_zero_is_the_dpo_update_exactly(tiny):
    scorer, reference, tok = tiny
    examples = xpo_examples(tok)
    scorer.zero_grad()
    loss_xpo, _ = XPOMethod(0.1, 0.0, tok.pad_token_id, reference, True).loss(scorer, examples)
    loss_xpo.backward()
    g_xpo = grads(scorer)
    scorer.zero_grad()
    pairs = [TokenizedExample(ex.prompt_ids, ex.response_ids[:2], ex.scores[:2]) for ex in examples]
    loss_dpo, _ = PreferenceMethod("dpo", {"beta": 0.1}, tok.pad_token_id, reference, True).loss(scorer, pairs)
    loss_dpo.backward()
    assert torch.equal(loss_xpo, loss_dpo)
    assert all(torch.equal(x, y) for x, y in zip(g_xpo, grads(scorer)))


def test_xpo_exploration_reads_the_reference_samples_column(tiny):
    """Example 0 has y_ref in column 1, example 1 in column 0: the extra loss is alpha * their summed log pi."""
    scorer, reference, tok = tiny
    examples = xpo_examples(tok)
    _, column = XPOMethod.pairs(examples)
    assert column.tolist() == [1, 0]
    method = XPOMethod(0.1, 0.5, tok.pad_token_id, reference, True)
    with torch.no_grad():
        ranked = method.dpo.ranked_batch(scorer, XPOMethod.pairs(examples)[0])
        with_alpha, _ = method.loss(scorer, examples)
        without, _ = XPOMethod(0.1, 0.0, tok.pad_token_id, reference, True).loss(scorer, examples)
    expected = 0.5 * (ranked.policy_logps[0, 1] + ranked.policy_logps[1, 0])
    assert torch.allclose(with_alpha - without, expected, atol=1e-5)


def test_nash_md_update_scores_only_the_policy_sample(tiny):
    """P = 1/2 and pi = pi_ref would give 0; here only the KL term acts, and the mixture sample (column 1) is
    ignored: changing it leaves the loss unchanged."""
    scorer, reference, tok = tiny
    prompt = tok("Hello")["input_ids"]
    y = tok("nice day", add_special_tokens=False)["input_ids"]
    method = NashMDMethod(0.1, tok.pad_token_id, reference, True)
    with torch.no_grad():
        a, _ = method.loss(scorer, [TokenizedExample(prompt, [y, [5, 6]], [0.5, 0.5])])
        b, _ = method.loss(scorer, [TokenizedExample(prompt, [y, [7, 8, 9]], [0.5, 0.5])])
    assert torch.equal(a, b) and a != 0


@pytest.mark.parametrize("config", ["nash_md_tiny", "xpo_tiny"])
def test_shipped_config_runs_end_to_end(tmp_path, config):
    out = tmp_path / config
    run_train(load_config(CONFIGS / f"{config}.yaml", [f"train.output_dir={out}", *SMALL, "online.stages=2",
                                                        "train.max_steps=1"]))
    stages = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in stages] == [0, 1] and all(s["train/examples"] == 6 for s in stages)
    rows = [json.loads(x) for x in (out / "stages/stage-0/samples.jsonl").read_text().splitlines()]
    other = "mixture" if config == "nash_md_tiny" else "reference"
    assert rows[0]["sources"] == ["policy", "policy", other, other]
    assert (out / "final" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["nash_md_tiny", "xpo_tiny"])
def test_the_trained_policy_beats_the_starting_one(tmp_path, config):
    """benchmarks/nash_xpo_seeds.py with the length reward: over seeds 0, 100 and 200 the trained policy beat the
    starting one on the same prompts every time (P = 0.531-0.540 for Nash-MD, 0.589-0.625 for XPO); asserted for
    seed 0 at the level every seed reached."""
    import sys

    sys.path.insert(0, str(CONFIGS.parent / "benchmarks"))
    from nash_xpo_seeds import final_against_initial

    out = tmp_path / config
    run_train(load_config(CONFIGS / f"{config}.yaml", [f"train.output_dir={out}", "online.stages=6", "train.seed=0",
                                                        "sampling.seed=0", "train.progress=false",
                                                        "rewards=[{kind: length, unit: chars}]"]))
    result = final_against_initial(out)
    assert result["p_final_beats_initial"] > 0.5
    assert result["final_reward"] > result["initial_reward"]


def test_alignkit_methods_lists_them_with_their_papers(capsys):
    from alignkit.cli import main

    assert main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "arXiv 2312.00886" in lines["nash_md"] and "update=nash_md" in lines["nash_md"]
    assert "arXiv 2405.21046" in lines["xpo"]
    assert "arXiv 2312.00886" in lines["preference_model"] and "PairRM" in lines["preference_model"]


def test_xpo_with_alpha_zero_trains_as_alignkits_online_dpo(tmp_path):
    """One stage on the same candidates (a policy and a reference sample per prompt, no tied scores): `xpo`
    with alpha 0 and `iterative_dpo` (best vs worst, the starting policy as reference) end with equal weights."""
    from safetensors.torch import load_file

    common = [*SMALL, "sampling.num_samples=1", "sampling.max_new_tokens=16", "online.stages=1", "train.max_steps=2", "train.batch_size=2",
              "online.sources=[policy, reference]", "online.reference=initial", "rewards=[{kind: length, unit: chars}]"]
    runs = {}
    for method, extra in (("xpo", ["online.loss_args={beta: 0.1, alpha: 0.0}"]),
                          ("iterative_dpo", ["method=iterative_dpo", "online.loss=dpo", "online.loss_args={beta: 0.1}"])):
        out = tmp_path / method
        run_train(load_config(CONFIGS / "xpo_tiny.yaml", [f"train.output_dir={out}", *common, *extra]))
        runs[method] = out
    rows = [json.loads(x) for x in (runs["xpo"] / "stages/stage-0/samples.jsonl").read_text().splitlines()]
    assert all(r["scores"][0] != r["scores"][1] for r in rows)  # a tie is a pair for XPO, none for iterative DPO
    a, b = (load_file(str(runs[m] / "final" / "model.safetensors")) for m in ("xpo", "iterative_dpo"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from alignkit.models.loading import load_causal_lm

    start = load_causal_lm(load_config(CONFIGS / "xpo_tiny.yaml").model)[0].state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a if k in start)  # the update did move the weights


def test_with_a_preference_model_judge_nash_md_plays_the_judges_own_probability(tmp_path, tiny_encoder):
    """One sample per source: the stage's P(y > y') = sigmoid(s(y) - s(y')) from samples.jsonl equals the judge's
    compare(prompt, y, y') (what TRL's loss, transcribed in tests/losses/test_nash_xpo.py, takes as `probability`)."""
    from alignkit.models.preference_model import save_preference_model
    from alignkit.models.reward_model import load_reward_model
    from alignkit.rewards.preference import PreferenceJudge

    torch.manual_seed(0)
    model, tok = load_reward_model(tiny_encoder, kind="causal")
    model.max_length = 64
    judge_path = save_preference_model(model, tok, tmp_path / "pm")
    out = tmp_path / "run"
    run_train(load_config(CONFIGS / "nash_md_tiny.yaml", [
        f"train.output_dir={out}", f"rewards=[{{kind: preference_model, path: {judge_path}}}]", "online.stages=1",
        "online.prompts_per_stage=3", "sampling.num_samples=1", "sampling.max_new_tokens=6", "train.max_steps=1",
        "train.progress=false"]))
    rows = [json.loads(x) for x in (out / "stages/stage-0/samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["sources"] == ["policy", "mixture"] for r in rows)
    p_stage = torch.sigmoid(torch.tensor([r["scores"][0] - r["scores"][1] for r in rows]))
    judge = PreferenceJudge.from_path(judge_path)
    p_judge = judge.compare([r["prompt"] for r in rows], [r["responses"][0] for r in rows], [r["responses"][1] for r in rows])
    assert torch.allclose(p_stage, p_judge, atol=1e-5) and not torch.allclose(p_judge, torch.full((3,), 0.5))
