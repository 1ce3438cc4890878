"""The eval runner: best-of-k by hand and by brute force, KL and perplexity against a naive
full-logits computation, win rates and preference accuracy on known inputs, and the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignkit.cli import main
from alignkit.config import load_config
from alignkit.errors import ConfigError
from alignkit.eval.runner import (
    EvalConfig,
    evaluate_model,
    format_table,
    implicit_scores,
    json_safe,
    preference_accuracy,
    reference_perplexity,
    sample_kl,
    tokenize,
)
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PAIRS = "alignkit:tiny_pairs.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tokenizer):
    """Two different tiny Llamas (policy, reference) in eval mode."""
    return build_tiny_model(tokenizer, seed=1).eval(), build_tiny_model(tokenizer, seed=0).eval()


def naive_logp(model, prompt: list[int], response: list[int]) -> float:
    """sum_j log softmax(logits at the position before response token j)[token j], from full logits."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].float()
    logp = F.log_softmax(logits, -1)
    return sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(response))


# ---------------------------------------------------------------- pure helpers


def test_json_safe():
    assert json_safe({"a": float("nan"), "b": [float("inf"), 1.0], "c": torch.tensor([1, 2])}) == {
        "a": None,
        "b": [None, 1.0],
        "c": [1, 2],
    }


# ---------------------------------------------------------------- model computations


def test_sample_kl_matches_full_logits(models, tokenizer):
    policy, reference = models
    prompt = tokenizer("Hello there")["input_ids"]
    responses = [
        tokenizer(" good day", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
        tokenizer(" the sea is wide and blue", add_special_tokens=False)["input_ids"],
    ]
    kl = sample_kl(policy, reference, [prompt], [responses], tokenizer.pad_token_id, batch_size=4)
    expected = [naive_logp(policy, prompt, r) - naive_logp(reference, prompt, r) for r in responses]
    assert kl["per_sample"][0].tolist() == pytest.approx(expected, abs=1e-4)
    assert kl["mean"] == pytest.approx(sum(expected) / 2, abs=1e-4)
    assert kl["per_token"] == pytest.approx(sum(expected) / sum(map(len, responses)), abs=1e-4)
    same = sample_kl(policy, policy, [prompt], [responses], tokenizer.pad_token_id, batch_size=4)
    assert same["per_sample"].abs().max() == 0 and same["per_token"] == 0


def test_reference_perplexity_matches_full_logits(models, tokenizer):
    policy, _ = models
    cfg = EvalConfig(reference_responses=PAIRS, max_rows=3, max_length=128, batch_size=2)
    out = reference_perplexity(policy, tokenizer, cfg)
    from alignkit.eval.runner import load_rows

    examples = tokenize(load_rows(PAIRS, 3), tokenizer, cfg)
    nll = -sum(naive_logp(policy, ex.prompt_ids, ex.response_ids[0]) for ex in examples)  # chosen = first
    tokens = sum(len(ex.response_ids[0]) for ex in examples)
    assert out["tokens"] == tokens and out["rows"] == 3
    assert out["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_implicit_reward_is_the_log_ratio(models, tokenizer):
    policy, reference = models
    cfg = EvalConfig(max_length=128, batch_size=8)
    from alignkit.eval.runner import load_rows

    examples = tokenize(load_rows(PAIRS, 2), tokenizer, cfg)
    ((ratio, targets, _),) = implicit_scores(policy, reference, tokenizer, examples, cfg, "ratio")
    ex = examples[1]
    expected = naive_logp(policy, ex.prompt_ids, ex.response_ids[1]) - naive_logp(
        reference, ex.prompt_ids, ex.response_ids[1]
    )
    assert float(ratio[1, 1]) == pytest.approx(expected, abs=1e-4)
    assert targets.tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_preference_accuracy_identities(models, tokenizer, tmp_path):
    """Same policy and reference: every log ratio is 0, all pairs tie -> exactly 1/2.
    Swapping chosen and rejected turns accuracy a into 1 - a (no tied scores)."""
    policy, reference = models
    rows = [json.loads(x) for x in (ROOT / "src/alignkit/assets/tiny_pairs.jsonl").read_text().splitlines()][
        :8
    ]
    straight, flipped = tmp_path / "straight.jsonl", tmp_path / "flipped.jsonl"
    straight.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flipped.write_text(
        "".join(json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows)
    )
    cfg = EvalConfig(preference_data=str(straight), max_length=128)
    assert preference_accuracy(policy, policy, tokenizer, cfg)["policy"] == 0.5
    a = preference_accuracy(policy, reference, tokenizer, cfg)
    b = preference_accuracy(
        policy, reference, tokenizer, EvalConfig(preference_data=str(flipped), max_length=128)
    )
    assert a["policy_score"] == "ratio" and a["rows"] == 8
    assert a["policy"] + b["policy"] == pytest.approx(1.0)
    no_ref = preference_accuracy(policy, None, tokenizer, cfg)
    assert no_ref["policy_score"] == "logp"


def test_preference_accuracy_of_a_reward_model(models, tokenizer, tmp_path):
    """A (randomly initialised) reward model scored through reward_logits: a + flipped = 1."""
    from alignkit.models.reward_model import load_reward_model, save_reward_model
    from alignkit.models.tiny import tiny_model_dir

    rm, rm_tok = load_reward_model(tiny_model_dir(tmp_path / "base"), init_from_base=True)
    save_reward_model(rm, rm_tok, tmp_path / "rm")
    rows = [json.loads(x) for x in (ROOT / "src/alignkit/assets/tiny_pairs.jsonl").read_text().splitlines()][
        :8
    ]
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text(
        "".join(json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows)
    )
    policy, _ = models
    a = preference_accuracy(
        policy,
        None,
        tokenizer,
        EvalConfig(preference_data=PAIRS, max_rows=8, reward_model=str(tmp_path / "rm")),
    )
    b = preference_accuracy(
        policy, None, tokenizer, EvalConfig(preference_data=str(flipped), reward_model=str(tmp_path / "rm"))
    )
    assert 0 <= a["reward_model"] <= 1 and a["reward_model"] + b["reward_model"] == pytest.approx(1.0)


# ---------------------------------------------------------------- text metrics and judges


# ---------------------------------------------------------------- the runner and the CLI


def test_evaluate_model_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = load_config(
        ROOT / "configs/eval_tiny.yaml",
        [
            f"output_dir={tmp_path}",
            "max_prompts=3",
            "max_rows=4",
            "sampling.num_samples=2",
            "sampling.max_new_tokens=8",
            "best_of_k=4",
            "progress=false",
        ],
        cls=EvalConfig,
    )
    result = evaluate_model(cfg)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved == result
    assert result["n_prompts"] == 3 and result["samples_per_prompt"] == 2
    assert set(result["rewards"]) == {"vader", "length"}
    assert result["best_of_k"]["k"] == [1, 2, 4] and result["best_of_k"]["selected_by"] == "vader"
    assert result["kl"]["mean"] == 0.0  # the model is its own reference (both are tiny-llama, seed 0)
    assert result["perplexity"]["rows"] == 4 and result["perplexity"]["perplexity"] > 1
    assert result["preference_accuracy"]["policy"] == 0.5  # log ratio 0 everywhere: all ties
    assert result["win_rate"]["n"] == 6 and result["win_rate"]["baseline"] == "chosen"
    for key in ("msttr_100", "distinct_1", "distinct_2", "unique_1", "unique_2", "length"):
        assert result[key] is not None
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and len(lines[0]["responses"]) == 4  # best-of-4 draws 4 samples per prompt
    assert len(lines[0]["rewards"]["vader"]) == 4 and len(lines[0]["kl"]) == 2
    assert "baseline" in lines[0]
    table = format_table(result)
    assert "reward vader" in table and "KL(pi||ref)" in table and "win rate vs chosen" in table

    # another model's samples.jsonl as the baseline, judged by a function
    other = load_config(
        None,
        [
            f"output_dir={tmp_path / 'vs'}",
            "model=tiny-gpt2",
            f"prompts={PAIRS}",
            "max_prompts=3",
            "sampling.num_samples=1",
            "sampling.max_new_tokens=4",
            "rewards=[{kind: length}]",
            f"baseline={tmp_path / 'samples.jsonl'}",
            "judge=test_sample_metrics:pairwise_judge",
            "progress=false",
        ],
        cls=EvalConfig,
    )
    vs = evaluate_model(other)
    assert vs["win_rate"]["n"] == 3 and "kl" not in vs


def test_cli_eval(tmp_path, capsys):
    code = main(
        [
            "eval",
            str(ROOT / "configs/eval_tiny.yaml"),
            f"output_dir={tmp_path}",
            "max_prompts=2",
            "max_rows=2",
            "sampling.num_samples=1",
            "sampling.max_new_tokens=4",
            "best_of_k=0",
            "progress=false",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "reward vader" in out and "eval.json" in out
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "samples.jsonl").is_file()


def test_cli_eval_config_errors(tmp_path, capsys):
    assert main(["eval", str(ROOT / "configs/eval_tiny.yaml"), "sampling.temprature=1"]) == 2
    assert "temprature" in capsys.readouterr().err
    assert main(["eval", str(ROOT / "configs/eval_tiny.yaml"), "judge=null"]) == 2
    assert "baseline and judge" in capsys.readouterr().err


def test_shipped_eval_config_loads():
    cfg = load_config(ROOT / "configs/eval_tiny.yaml", cls=EvalConfig)
    assert cfg.rewards and cfg.best_of_k == 8 and cfg.judge.kind == "vader"
    with pytest.raises(ConfigError, match="prompts"):
        evaluate_model(EvalConfig(model="tiny-llama"))


def test_the_reference_is_scored_once_per_loaded_model_and_data(tokenizer, tmp_path, monkeypatch):
    """compare evaluates every run against one loaded start model: its log-probs of the held-out pairs are
    computed once, and again after its weights change in place."""
    import alignkit.eval.runner as runner

    policy, reference = build_tiny_model(tokenizer, seed=1).eval(), build_tiny_model(tokenizer, seed=0).eval()
    calls = []
    real = runner.engine_logps

    def counting(model, *args, **kwargs):
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(runner, "engine_logps", counting)
    cfg = EvalConfig(preference_data=PAIRS, max_rows=6, max_length=128)
    first = preference_accuracy(policy, reference, tokenizer, cfg)
    assert preference_accuracy(policy, reference, tokenizer, cfg) == first
    assert sum(m is reference for m in calls) == 1 and sum(m is policy for m in calls) == 2
    with torch.no_grad():
        next(reference.parameters()).mul_(1.5)
    preference_accuracy(policy, reference, tokenizer, cfg)
    assert sum(m is reference for m in calls) == 2


def test_held_out_prompts_are_the_ones_a_training_split_holds_out(tmp_path):
    """``held_out_size`` keeps exactly the prompts that a span/K-wise reward model's split held out."""
    import json

    from alignkit.data.spans import split_by_prompt
    from alignkit.eval.runner import EvalConfig, load_prompt_rows, load_rows

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(10)))
    _, held = split_by_prompt(load_rows(str(path)), 3, 7)  # what a run with data.eval_size=3, train.seed=7 held out
    picked = load_prompt_rows(EvalConfig(prompts=str(path), held_out_size=3, held_out_seed=7))
    assert [ex.prompt for ex in picked] == [ex.prompt for ex in held] and len(picked) == 3
    first_two = load_prompt_rows(EvalConfig(prompts=str(path), held_out_size=3, held_out_seed=7, max_prompts=2))
    assert [ex.prompt for ex in first_two] == [ex.prompt for ex in held[:2]]
    assert len(load_prompt_rows(EvalConfig(prompts=str(path), max_prompts=4))) == 4
