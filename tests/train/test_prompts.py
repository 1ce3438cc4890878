"""The prompts of the sampling loop: each stage's draw, and tokenization of only the prompts the stages draw
(the same draws, token ids and training as tokenizing the whole file first)."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignkit.config import load_config
from alignkit.data.pipeline import TokenizedRows
from alignkit.models.loading import load_causal_lm
from alignkit.train.prompts import PromptRows, draw, load_prompts, prompt_draw, stage_draws
from alignkit.train.run import run_train
from alignkit.train.sampling import stage_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["sampling.num_samples=2", "sampling.max_new_tokens=4", "train.max_steps=1", "train.progress=false"]


def raft(tmp_path, name="run", *overrides):
    return load_config(CONFIGS / "raft_tiny.yaml", [f"train.output_dir={tmp_path / name}", *SMALL, *overrides])


def test_a_draw_takes_b_distinct_prompts_or_all_of_them_in_order():
    assert prompt_draw(5, 0, seed=1) == [0, 1, 2, 3, 4]  # b = 0: every prompt
    assert prompt_draw(5, 9, seed=1) == [0, 1, 2, 3, 4]  # b >= n: every prompt
    picked = prompt_draw(24, 4, seed=3)
    assert len(set(picked)) == 4 and all(0 <= i < 24 for i in picked)
    assert prompt_draw(24, 4, seed=3) == picked and prompt_draw(24, 4, seed=4) != picked  # seeded per stage


def test_the_stages_draws_are_the_union_of_each_stages_draw(tmp_path):
    cfg = raft(tmp_path, "u", "online.prompts_per_stage=4", "online.stages=3")
    per_stage = [prompt_draw(24, 4, cfg.train.seed + s) for s in range(3)]
    union = stage_draws(cfg, 24, range(3))
    assert union == list(dict.fromkeys(per_stage[0] + per_stage[1] + per_stage[2]))  # first-draw order, once each
    assert stage_draws(cfg, 24, range(1, 3)) == list(dict.fromkeys(per_stage[1] + per_stage[2]))  # resumed at 1
    everything = raft(tmp_path, "all", "online.prompts_per_stage=0")
    assert stage_draws(everything, 24, range(2)) == list(range(24))


def test_only_the_drawn_prompts_are_tokenized_and_they_match_the_whole_file_tokenized(tmp_path):
    cfg = raft(tmp_path, "lazy", "online.prompts_per_stage=4", "online.stages=2")
    _, tok = load_causal_lm(cfg.model)
    lazy = load_prompts(cfg, tok, stages=range(2))
    eager = load_prompts(cfg, tok)  # alignkit generate: every prompt now
    assert isinstance(lazy, PromptRows) and isinstance(eager, list)
    assert len(lazy) == len(eager) == 24  # the same number of prompts, so the same draws
    assert sorted(lazy.tokenized.done) == sorted(stage_draws(cfg, 24, range(2)))  # 8 or fewer of 24, no more
    assert len(lazy.tokenized.done) <= 8
    for stage in range(2):
        a, b = (draw(rows, 4, cfg.train.seed + stage) for rows in (lazy, eager))
        assert [(r.prompt, r.prompt_ids) for r in a] == [(r.prompt, r.prompt_ids) for r in b]
    assert lazy[23].prompt_ids == eager[23].prompt_ids  # any other prompt when read
    assert len(lazy.tokenized.done) <= 9


def test_dropping_long_prompts_tokenizes_every_prompt_first(tmp_path):
    cfg = raft(tmp_path, "drop", "online.prompts_per_stage=4", "data.drop_long_prompts=true")
    _, tok = load_causal_lm(cfg.model)
    assert isinstance(load_prompts(cfg, tok, stages=range(2)), list)  # a dropped prompt would change the draws


def test_a_run_that_tokenizes_the_drawn_prompts_samples_and_trains_as_one_that_tokenizes_all(tmp_path, monkeypatch):
    common = ["online.prompts_per_stage=4", "online.stages=2"]
    lazy = run_train(raft(tmp_path, "lazy", *common))
    monkeypatch.setattr(TokenizedRows, "prepared", lambda self, indices: None)  # every prompt first, as before
    eager = run_train(raft(tmp_path, "eager", *common))
    for stage in range(2):
        rows = [[json.loads(x) for x in (stage_dir(out, stage) / "samples.jsonl").read_text().splitlines()]
                for out in (lazy, eager)]
        assert [(r["prompt"], r["prompt_ids"], r["response_ids"]) for r in rows[0]] == \
            [(r["prompt"], r["prompt_ids"], r["response_ids"]) for r in rows[1]]
    a, b = (load_file(str(out / "final" / "model.safetensors")) for out in (lazy, eager))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name


@pytest.mark.parametrize("stages", [None, range(1)])
def test_a_prompt_file_of_whole_texts_only_says_so(tmp_path, stages):
    from alignkit.errors import ConfigError

    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "just a document"}\n')
    cfg = raft(tmp_path, "t", f"data.train={data}")
    _, tok = load_causal_lm(cfg.model)
    with pytest.raises(ConfigError, match="has no prompts"):
        load_prompts(cfg, tok, stages=stages)
