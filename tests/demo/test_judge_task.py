"""The review judge task: the demo's base model and VADER-ranked samples, copied for the preference model and
the policies, with the held-out prompts neither sees."""

import json

from alignkit.demo import judge_task, pipeline


def test_the_task_copies_the_demos_base_ranked_samples_and_prompts(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "base").mkdir(parents=True)
    (cache / "base" / "config.json").write_text("{}")
    ranked = [{"prompt": "The film was", "responses": [" great.", " awful."], "scores": [0.62, -0.46]}]
    (cache / "ranked.jsonl").write_text(json.dumps(ranked[0]) + "\n")
    (cache / "prompts.jsonl").write_text('{"prompt": "The film was"}\n{"prompt": "I think"}\n')
    (cache / "eval_prompts.jsonl").write_text('{"prompt": "This camera"}\n')
    calls = []

    def fake_prepare(cfg, timings):
        calls.append(cfg.cache_dir)
        return cache / "base", cache, 0.9, True

    monkeypatch.setattr(pipeline, "prepare", fake_prepare)
    out = tmp_path / "task"
    (out / "base").mkdir(parents=True)
    (out / "base" / "stale.bin").write_text("old")  # a rebuilt task replaces its base model whole
    info = judge_task.build_task(out, cache_dir="C")
    assert calls == ["C"]
    assert info["rows"] == {"ranked.jsonl": 1, "prompts.jsonl": 2, "eval_prompts.jsonl": 1}
    assert [json.loads(x) for x in (out / "ranked.jsonl").read_text().splitlines()] == ranked
    assert sorted(p.name for p in (out / "base").iterdir()) == ["config.json"]
    assert json.loads((out / "task.json").read_text()) == info
