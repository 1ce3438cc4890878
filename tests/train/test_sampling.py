"""The sampling loop (RAFT, RSO, online ranking losses, iterative DPO): selection on hand-made records, config
errors, candidate sources, the stage files, resume of an interrupted stage, `alignkit generate`, every shipped
config, and the real task: a tiny SFT model's fresh samples get more positive VADER sentiment."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignkit
from alignkit.cli import main
from alignkit.config import load_config
from alignkit.data.examples import load_examples
from alignkit.engine.generation import SamplingConfig, sample
from alignkit.errors import ConfigError
from alignkit.models.loading import load_causal_lm
from alignkit.models.tiny import tiny_model_dir
from alignkit.rewards import build_reward
from alignkit.train import prompts, sampling
from alignkit.train.candidates import Candidates
from alignkit.train.run import run_train
from alignkit.train.sampling import ModelSource, gather, load_prompts, select, stage_dir, to_examples
from alignkit.train.sft import SFTMethod

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ASSETS = Path(alignkit.__file__).parent / "assets"
SHIPPED = ["raft_tiny", "rso_tiny", "online_rrhf_tiny", "iterative_dpo_tiny"]
SMALL = ["online.prompts_per_stage=4", "sampling.num_samples=4", "sampling.max_new_tokens=6", "train.max_steps=2",
         "train.progress=false"]


def cfg_for(tmp_path, name, *overrides, config="raft_tiny"):
    return load_config(CONFIGS / f"{config}.yaml", [f"train.output_dir={tmp_path / name}", *SMALL, *overrides])


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


# ---------------------------------------------------------------- selection on hand-made records


def records(scores):
    """Hand-made candidates: prompt b's k-th response is ``r{b}{k}`` with token ids ``[20 + k, 1]``."""
    rows = [{"prompt": f"p{b}", "responses": [f"r{b}{k}" for k in range(len(s))], "sources": ["policy"] * len(s),
             "prompt_ids": [0, 10 + b], "response_ids": [[20 + k, 1] for k in range(len(s))], "scores": s}
            for b, s in enumerate(scores)]
    return Candidates.from_rows(rows)


def shout_filter(prompts, responses, scores):
    return [r != "r01" for r in responses]  # drop prompt 0's best (a reward hack)


def test_the_filter_hook_removes_candidates_before_ranking(tmp_path):
    cfg = load_config(None, ["method=raft"])
    recs = records([[0.1, 0.9, 0.5], [0.3, 0.2]])
    items = select("raft", recs, cfg, stage=0)
    assert [(it.row, it.indices) for it in items] == [(0, [1]), (1, [0])]
    items = select("raft", recs, cfg, stage=0, filter_fn=shout_filter)
    assert [(it.row, it.indices) for it in items] == [(0, [2]), (1, [0])]
    assert recs.rows()[0]["kept"] == [False, False, True] and recs.rows()[1]["kept"] == [True, False]


def test_eq5_ranking_uses_the_stored_log_probs():
    # r = [0.9, 0.5], log pi/pi_ref = [3, 0], kl_beta 0.2: [0.9 - 0.6, 0.5] = [0.3, 0.5]: the second wins
    cfg = load_config(None, ["method=raft", "online.kl_beta=0.2"])
    recs = records([[0.9, 0.5]])
    recs.set_values("logps", [[-2.0, -5.0]])
    recs.set_values("ref_logps", [[-5.0, -5.0]])
    assert [it.indices for it in select("raft", recs, cfg, stage=0)] == [[1]]


def test_selected_items_become_training_examples():
    recs = records([[0.1, 0.9, 0.5]])
    cfg = load_config(None, ["method=iterative_dpo"])
    items = select("iterative_dpo", recs, cfg, stage=3)
    (ex,) = to_examples(recs, items, stage=3, sft=False)
    assert ex.prompt_ids == [0, 10] and ex.response_ids == [[21, 1], [20, 1]] and ex.scores == [1.0, 0.0]
    assert ex.source == "stage-3:0"
    (best,) = to_examples(recs, items, stage=3, sft=True)  # sft on a pair trains on its better response
    assert best.response_ids == [[21, 1]] and best.scores is None


# ---------------------------------------------------------------- config errors, before any model loads


@pytest.mark.parametrize("overrides, key", [
    (["rewards=[]"], "rewards:"),
    (["loss={beta: 0.1}"], "loss: method 'raft' takes its update's hyper-parameters from online.loss_args"),
    (["online.loss=dpo"], "online.loss: raft fine-tunes"),
    (["method=online", "online.loss=nope"], "online.loss: unknown loss 'nope'"),
    (["method=online", "online.loss=rrhf", "online.loss_args={beta: 1}"], "online.loss_args.beta"),
    (["online.loss_args={lam: 1}"], "online.loss_args: the sft update"),
    (["online.sources=[policy, policy]"], "online.sources"),
    (["online.filter=no_such_module_xyz:f"], "online.filter:"),
    (["method=rso", "online.rso_beta=0"], "online.rso_beta"),
])
def test_config_errors_name_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(")):
        run_train(cfg_for(tmp_path, "bad", *overrides))


def test_a_filter_named_in_the_config_is_applied(tmp_path, monkeypatch):
    (tmp_path / "my_filters.py").write_text(
        "def first_only(prompts, responses, scores):\n"
        "    seen, keep = set(), []\n"
        "    for p in prompts:\n"
        "        keep.append(p not in seen)\n"
        "        seen.add(p)\n"
        "    return keep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = run_train(cfg_for(tmp_path, "filtered", "online.filter=my_filters:first_only", "online.stages=1"))
    assert all(r["kept"] == [True, False, False, False] for r in read(stage_dir(out, 0) / "samples.jsonl"))


# ---------------------------------------------------------------- sources


def test_candidates_from_the_policy_another_model_and_the_dataset(tmp_path):
    other = tiny_model_dir(tmp_path / "other", seed=1)
    cfg = load_config(None, ["data.train=alignkit:tiny_pairs.jsonl", "data.max_rows=3"])
    policy, tok = load_causal_lm(cfg.model)
    rows = load_prompts(cfg, tok, with_responses=True)
    other_model, other_tok = load_causal_lm(load_config(None, [f"model.name_or_path={other}"]).model)
    sources = [ModelSource("policy", policy, tok, tok, None), None, ModelSource(str(other), other_model, other_tok, tok, None)]
    recs, metrics = gather(sources, rows, SamplingConfig(num_samples=2, max_new_tokens=5))
    assert len(recs) == 3 and metrics["gen/tokens_per_s"] > 0
    first = load_examples(ASSETS / "tiny_pairs.jsonl", max_rows=1)[0]
    rec = recs.rows()[0]
    assert rec["prompt"] == first.prompt and rec["sources"] == ["policy"] * 2 + ["dataset"] * 2 + [str(other)] * 2
    assert rec["responses"][2:4] == first.responses  # the row's own chosen and rejected
    assert tok.decode(rec["response_ids"][2], skip_special_tokens=True) == first.responses[0]
    assert rec["responses"][0] == tok.decode(rec["response_ids"][0], skip_special_tokens=True)


def test_a_sampler_model_proposes_the_policy_candidates(tmp_path, monkeypatch):
    """RAFT distillation: online.sampler_model samples; the policy being trained does not."""
    teacher = tiny_model_dir(tmp_path / "teacher", seed=2)
    out = run_train(cfg_for(tmp_path, "distil", f"online.sampler_model={teacher}", "online.stages=1"))
    rows = read(stage_dir(out, 0) / "samples.jsonl")
    assert all(set(r["sources"]) == {str(teacher)} for r in rows)
    model, tok = load_causal_lm(load_config(None, [f"model.name_or_path={teacher}"]).model)
    ids = [r["prompt_ids"] for r in rows]
    assert sample(model, tok, ids, SamplingConfig(num_samples=4, max_new_tokens=6)).response_ids == \
        [r["response_ids"] for r in rows]


# ---------------------------------------------------------------- the loop's files, resume, every config


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_runs_its_stages_and_writes_them(tmp_path, config):
    # the length reward: VADER scores the random tiny model's 6-token samples 0 almost always, and a stage
    # whose candidates all tie selects nothing and trains nothing
    out = run_train(cfg_for(tmp_path, config, "rewards=[{kind: length, unit: chars}]", config=config))
    cfg = load_config(CONFIGS / f"{config}.yaml")
    stages = cfg.online.stages
    for n in range(stages):
        rows = read(stage_dir(out, n) / "samples.jsonl")
        k = 4 + (2 if "dataset" in cfg.online.sources else 0)  # + the chosen and rejected of tiny_pairs
        assert all(len(r["responses"]) == len(r["scores"]) == len(r["kept"]) == k for r in rows)
        assert len(rows) == 4 and (stage_dir(out, n) / "final" / "model.safetensors").is_file()
    metrics = read(out / "metrics.jsonl")
    assert [r["stage"] for r in metrics] == list(range(stages))
    for r in metrics:
        assert {"reward/mean", "reward/best_of_k", "reward/kept", "kept/distinct_2", "train/loss"} <= set(r)
        assert r["reward/best_of_k"] >= r["reward/mean"]
    assert (out / "final" / "model.safetensors").is_file()
    # the samples file reads back as ranked training data
    examples = load_examples(stage_dir(out, 0) / "samples.jsonl", format="ranked", skip_bad_rows=True)
    assert examples and all(ex.scores is not None for ex in examples)


def test_raft_kl_ranking_logs_policy_and_reference_log_probs(tmp_path):
    out = run_train(cfg_for(tmp_path, "kl", "online.kl_beta=0.1", "online.stages=2"))
    first, second = (read(stage_dir(out, n) / "samples.jsonl") for n in (0, 1))
    # stage 0 samples the starting policy itself: log pi/pi_ref = 0; after a stage of SFT it is not
    assert all(r["logps"] == pytest.approx(r["ref_logps"], abs=1e-4) for r in first)
    assert any(r["logps"] != pytest.approx(r["ref_logps"], abs=1e-3) for r in second)


def test_global_ranking_keeps_b_samples_per_stage(tmp_path):
    out = run_train(cfg_for(tmp_path, "global", "online.ranking=global", "online.stages=1"))
    rows = read(stage_dir(out, 0) / "samples.jsonl")
    assert sum(sum(r["kept"]) for r in rows) == 4  # 4 prompts x 4 samples, the top 1/4
    kept = sorted((s for r in rows for s, k in zip(r["scores"], r["kept"]) if k), reverse=True)
    dropped = [s for r in rows for s, k in zip(r["scores"], r["kept"]) if not k]
    assert min(kept) >= max(dropped)


def test_an_interrupted_stage_resumes_without_sampling_again(tmp_path, monkeypatch):
    common = ["online.stages=2", "train.max_steps=3"]
    straight = run_train(cfg_for(tmp_path, "straight", *common))

    calls = {"loss": 0, "gather": 0}
    loss, gather_fn = SFTMethod.loss, sampling.gather

    def crash_in_stage_1(self, module, examples):
        calls["loss"] += 1
        if calls["loss"] == 5:  # stage 0 takes 3 steps, then stage 1's second step crashes
            raise KeyboardInterrupt
        return loss(self, module, examples)

    def counting_gather(*args, **kwargs):
        calls["gather"] += 1
        return gather_fn(*args, **kwargs)

    monkeypatch.setattr(SFTMethod, "loss", crash_in_stage_1)
    monkeypatch.setattr(sampling, "gather", counting_gather)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg_for(tmp_path, "resumed", *common))
    out = tmp_path / "resumed"
    assert calls["gather"] == 2 and (stage_dir(out, 1) / "samples.jsonl").is_file()
    assert (stage_dir(out, 0) / "final").is_dir() and not (stage_dir(out, 1) / "final").is_dir()
    stage1_samples = (stage_dir(out, 1) / "samples.jsonl").read_text()

    monkeypatch.setattr(SFTMethod, "loss", loss)
    run_train(cfg_for(tmp_path, "resumed", *common, "train.resume=true"))
    assert calls["gather"] == 2  # stage 0 skipped, stage 1's samples reused
    assert (stage_dir(out, 1) / "samples.jsonl").read_text() == stage1_samples
    for name, expected in weights(straight / "final").items():
        torch.testing.assert_close(weights(out / "final")[name], expected, atol=1e-5, rtol=0, msg=name)
    assert [r["stage"] for r in read(out / "metrics.jsonl")] == [0, 1]

    run_train(cfg_for(tmp_path, "resumed", *common))  # without resume, a run starts over
    assert calls["gather"] == 4


def test_lora_stages_keep_their_adapters_and_resume_from_them(tmp_path):
    """With LoRA a stage keeps its adapter (kilobytes), not a merged copy of the model; a later stage,
    the run's final/ and a resumed run all start from the adapter on the recorded base."""
    lora = ["model.lora.enabled=true", "online.stages=2", "train.max_steps=2", "train.learning_rate=1e-3"]
    out = run_train(cfg_for(tmp_path, "lora", *lora))
    for folder in (stage_dir(out, 0) / "final", stage_dir(out, 1) / "final", out / "final"):
        assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
        assert not (folder / "merged").exists()
    size = sum(f.stat().st_size for f in (stage_dir(out, 0) / "final").iterdir())
    assert size < 1_000_000, size
    final, _ = load_causal_lm(load_config(None, [f"model.name_or_path={out / 'final'}"]).model)
    assert not hasattr(final, "peft_config")  # loaded merged onto its base
    resumed = run_train(cfg_for(tmp_path, "lora", *lora, "online.stages=3", "train.resume=true"))
    assert [r["stage"] for r in read(resumed / "metrics.jsonl")] == [0, 1, 2]


def test_keep_stage_models_keeps_the_weights_of_the_last_n_stages(tmp_path):
    out = run_train(cfg_for(tmp_path, "keep", "online.stages=3", "online.keep_stage_models=1", "train.max_steps=1"))
    kept = [(stage_dir(out, n) / "final" / "model.safetensors").is_file() for n in range(3)]
    assert kept == [False, False, True] and (stage_dir(out, 0) / "samples.jsonl").is_file()
    assert (out / "final" / "model.safetensors").is_file()


def test_each_process_samples_scores_and_returns_its_own_block_of_the_prompts(monkeypatch):
    """Data parallel sampling, simulated in one process: process i of 2 generates for its contiguous block of
    the stage's draw only, with its own seed, and what the processes gather is the draw in order."""
    from alignkit.distributed import shard

    cfg = cfg_for(Path("unused"), "dp", "online.prompts_per_stage=5", "sampling.num_samples=2")
    policy, tok = load_causal_lm(cfg.model)
    rows, reward = load_prompts(cfg, tok), build_reward(cfg.rewards)
    sources = [ModelSource("policy", policy, tok, tok, None)]
    calls, gather_fn = [], sampling.gather

    def recording_gather(sources, rows, sampling_cfg, progress=False):
        calls.append(([r.prompt for r in rows], sampling_cfg.seed))
        return gather_fn(sources, rows, sampling_cfg, progress)

    monkeypatch.setattr(sampling, "gather", recording_gather)
    blocks = []
    for index in (0, 1):
        monkeypatch.setattr(sampling, "rank", lambda index=index: index)
        monkeypatch.setattr(sampling, "shard", lambda items, index=index: shard(items, index, 2))
        monkeypatch.setattr(sampling, "gather_objects", list)  # this process's part of the all-gather
        blocks.append(sampling.sample_stage(cfg, 3, sources, rows, reward, {}, progress=False)[0])
    draw = [r.prompt for r in prompts.draw(rows, 5, cfg.train.seed + 3)]
    assert calls == [(draw[:3], cfg.sampling.seed + 3), (draw[3:], cfg.sampling.seed + 3 + 1_000_003)]
    both = blocks[0].rows() + blocks[1].rows()
    assert [r["prompt"] for r in both] == draw
    assert all(len(r["scores"]) == len(r["responses"]) == 2 for r in both)


def test_generation_metrics_of_several_processes_merge_into_one_throughput():
    a = {"gen/tokens_per_s": 100.0, "gen/mean_length": 10.0, "gen/seconds": 2.0}  # 200 tokens, 20 responses
    b = {"gen/tokens_per_s": 50.0, "gen/mean_length": 5.0, "gen/seconds": 4.0}  # 200 tokens, 40 responses
    merged = sampling.merge_generation_metrics([a, b, {}])  # a process with no prompts reports nothing
    assert merged == pytest.approx({"gen/tokens_per_s": 150.0, "gen/mean_length": 400 / 60, "gen/seconds": 4.0,
                                    "gen/processes": 2.0})
    assert sampling.merge_generation_metrics([a]) == a and sampling.merge_generation_metrics([{}]) == {}


# ---------------------------------------------------------------- alignkit generate


def test_generate_writes_scored_samples_that_read_back_as_ranked_data(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    code = main(["generate", str(CONFIGS / "raft_tiny.yaml"), "data.max_rows=5", "sampling.num_samples=3",
                 "sampling.max_new_tokens=6", "train.progress=false", "-o", str(path)])
    assert code == 0 and "5 prompts x 3 responses" in capsys.readouterr().out
    rows = read(path)
    assert [set(r) for r in rows] == [{"prompt", "responses", "scores"}] * 5
    vader = build_reward({"kind": "vader"})
    for r in rows:
        assert len(r["responses"]) == 3
        assert r["scores"] == pytest.approx(vader.score([r["prompt"]] * 3, r["responses"]).tolist())
    examples = load_examples(path, skip_bad_rows=True)
    assert examples and all(ex.responses for ex in examples)
    # default output: train.output_dir/samples.jsonl; no rewards: no scores
    assert main(["generate", str(CONFIGS / "raft_tiny.yaml"), "data.max_rows=2", "sampling.max_new_tokens=4",
                 "rewards=[]", f"train.output_dir={tmp_path / 'run'}", "train.progress=false"]) == 0
    assert [set(r) for r in read(tmp_path / "run" / "samples.jsonl")] == [{"prompt", "responses"}] * 2


# ---------------------------------------------------------------- the real task: positive VADER sentiment


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory):
    """The tiny Llama after 150 SFT steps on short reviews (alignkit:review_sft.jsonl, half positive, half
    negative, some neutral): it writes words, and its fresh samples average about 0.1 VADER."""
    out = tmp_path_factory.mktemp("sft")
    run_train(load_config(None, [
        "method=sft", "model.name_or_path=tiny-llama", "data.train=alignkit:review_sft.jsonl",
        f"train.output_dir={out}", "train.learning_rate=3e-3", "train.batch_size=16", "train.max_steps=150",
        "train.warmup_steps=5", "train.progress=false",
    ]))
    return out / "final"


def fresh_reward(model_dir, samples=8, seed=1234):
    """Mean VADER reward of fresh samples: the 24 built-in review prompts x ``samples``, at temperature 1."""
    model, tok = load_causal_lm(load_config(None, [f"model.name_or_path={model_dir}"]).model)
    prompts = [json.loads(line)["prompt"] for line in (ASSETS / "review_prompts.jsonl").read_text().splitlines()]
    out = sample(model, tok, [tok(p)["input_ids"] for p in prompts],
                 SamplingConfig(num_samples=samples, max_new_tokens=16, seed=seed))
    texts = [t for ts in out.texts for t in ts]
    return float(build_reward({"kind": "vader"}).score([p for p in prompts for _ in range(samples)], texts).mean())


def train_on_the_task(tmp_path, sft_model, config, seed=0):
    out = run_train(load_config(CONFIGS / f"{config}.yaml", [
        f"model.name_or_path={sft_model}", f"train.output_dir={tmp_path / config}", f"train.seed={seed}",
        f"sampling.seed={seed}", "train.progress=false"]))
    return fresh_reward(sft_model), fresh_reward(out / "final"), read(out / "metrics.jsonl")


# Measured with these helpers, training seeds 0-7 (train.seed = sampling.seed), the fixture's SFT model, fresh
# samples 24 prompts x 8 at sampling seed 1234; torch 2.13 CPU. Before (the SFT model): 0.090.
#   raft_tiny (2 stages, b=16, K=8, best per prompt, 2 SFT epochs):  after 0.372 - 0.528 (seed 0: 0.528)
#   iterative_dpo_tiny (2 iterations, K=8, best vs worst, DPO):      after 0.292 - 0.391 (seed 0: 0.360)
# The margins below are about half the smallest gain.
@pytest.mark.parametrize("config, margin", [("raft_tiny", 0.15), ("iterative_dpo_tiny", 0.1)])
def test_two_stages_raise_the_vader_reward_of_fresh_samples(tmp_path, sft_model, config, margin):
    before, after, stages = train_on_the_task(tmp_path, sft_model, config)
    print(config, "before", before, "after", after, [round(s["reward/mean"], 3) for s in stages])
    assert len(stages) == 2
    assert after > before + margin, (before, after)
    assert stages[1]["reward/mean"] > stages[0]["reward/mean"]  # stage 2's samples already come from a better policy


REVIEW_ONLINE = ["data.train=alignkit:review_prompts.jsonl", "data.max_prompt_length=32", "online.sources=[policy]",
                 "sampling.num_samples=8", "train.num_epochs=4", "train.learning_rate=1e-3", "online.loss_args={}"]


# Measured as above, training seeds 0-2. Before: 0.090. rso_tiny (1 stage, K=16, 8 accepted, DPO): after
# 0.291 - 0.426. online_rrhf_tiny on the review prompts with REVIEW_ONLINE: rrhf 0.177 - 0.189, pro
# 0.144 - 0.232, listwise_dpo 0.387 - 0.559.
@pytest.mark.slow
@pytest.mark.parametrize("config, overrides, margin", [
    ("rso_tiny", [], 0.1),
    ("online_rrhf_tiny", [*REVIEW_ONLINE, "online.loss=rrhf"], 0.04),
    ("online_rrhf_tiny", [*REVIEW_ONLINE, "online.loss=pro"], 0.03),
    ("online_rrhf_tiny", [*REVIEW_ONLINE, "online.loss=listwise_dpo"], 0.15),
], ids=["rso", "online_rrhf", "online_pro", "online_listwise_dpo"])
def test_rso_and_the_online_ranking_losses_raise_the_vader_reward_too(tmp_path, sft_model, config, overrides, margin):
    out = run_train(load_config(CONFIGS / f"{config}.yaml", [
        f"model.name_or_path={sft_model}", f"train.output_dir={tmp_path / config}", "train.progress=false", *overrides]))
    before, after = fresh_reward(sft_model), fresh_reward(out / "final")
    print(config, overrides[-1:], "before", before, "after", after)
    assert after > before + margin, (before, after)
