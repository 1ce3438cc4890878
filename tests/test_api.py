"""The Python API with in-memory objects: a model object, a tokenizer object, a datasets.Dataset."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignkit
from alignkit import in_memory
from alignkit.errors import ConfigError
from alignkit.models.tiny import tiny_model_dir


def pairs(n: int = 8) -> list[dict]:
    lines = (files("alignkit") / "assets" / "tiny_pairs.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines[:n]]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("base") / "tiny")


def test_dpo_from_objects_trains_the_object_and_records_what_it_was(tmp_path, base_dir):
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    before = model.model.embed_tokens.weight.detach().clone()
    run = alignkit.train("dpo", model=model, tokenizer=tokenizer, train_data=Dataset.from_list(pairs()),
                         eval_data=pairs(4), output_dir=tmp_path / "run", loss={"beta": 0.1},
                         train={"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "progress": False})
    assert isinstance(run, alignkit.Run) and run.output_dir == tmp_path / "run"
    assert [r["step"] for r in run.metrics] == [1, 2, 2]  # two steps, then the evaluation of eval_data
    assert "eval/loss" in run.metrics[-1]
    assert not torch.equal(model.model.embed_tokens.weight, before)  # the object itself was trained
    saved = yaml.safe_load((run.output_dir / "config.yaml").read_text())
    assert saved["model"]["name_or_path"].startswith(f"<in-memory model: LlamaForCausalLM from {base_dir}")
    assert saved["data"]["train"].startswith("<in-memory train_data: Dataset")
    assert saved["loss"] == {"beta": 0.1}
    assert not in_memory._held  # nothing is kept once the run returns
    trained = run.model
    torch.testing.assert_close(trained.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_lora_from_a_model_object_saves_an_adapter_peft_loads(tmp_path, base_dir):
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    run = alignkit.train("dpo", model=model, train_data=pairs(), output_dir=tmp_path / "lora", lora={"r": 4},
                         train={"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "progress": False})
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), run.final)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in peft_model.state_dict().items())
    assert run.model.peft_config["default"].r == 4  # the adapter on the base it records, trainable again


def test_config_keys_and_bad_inputs_fail_before_training(tmp_path):
    held = {}
    cfg = alignkit.train_config("dpo", model="tiny-llama", train_data=pairs(), overrides=["train.max_steps=3"],
                                config={"train": {"max_steps": 9, "seed": 5}}, loss={"beta": 0.2}, held=held)
    assert in_memory.lookup(cfg.data.train) == pairs() and held == {"train_data": cfg.data.train}
    in_memory.release(*held.values())
    assert (cfg.train.max_steps, cfg.train.seed, cfg.loss, cfg.model.name_or_path) == (3, 5, {"beta": 0.2}, "tiny-llama")
    with pytest.raises(ConfigError, match="train.max_step"):
        alignkit.train("dpo", model="tiny-llama", train_data=pairs(), train={"max_step": 1})
    with pytest.raises(ConfigError, match="train_data: expected a path, a datasets.Dataset or a list of dicts"):
        alignkit.train("dpo", model="tiny-llama", train_data={"prompt": "x"})
    assert not in_memory._held


def test_a_saved_config_with_in_memory_names_says_to_give_a_path(tmp_path, capsys):
    from alignkit.cli import main

    cfg = tmp_path / "config.yaml"
    cfg.write_text("method: sft\nmodel: {name_or_path: '<in-memory model: LlamaForCausalLM #99>'}\n"
                   "data: {train: 'alignkit:tiny_sft.jsonl'}\n")
    assert main(["train", str(cfg)]) == 2
    assert "passed to the Python API in another session; give a path" in capsys.readouterr().err


def test_generate_score_and_evaluate_take_objects(tmp_path, base_dir):
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    rows = alignkit.generate(model, ["\n\nHuman: bread?\n\nAssistant:"] * 2, tokenizer=tokenizer,
                             output=tmp_path / "samples.jsonl", sampling={"num_samples": 2, "max_new_tokens": 4},
                             rewards=[{"kind": "length", "unit": "chars"}], train={"progress": False})
    assert len(rows) == 2 and all(len(r["responses"]) == len(r["scores"]) == 2 for r in rows)
    assert rows[0]["scores"] == [float(len(r)) for r in rows[0]["responses"]]
    assert alignkit.score({"kind": "length", "unit": "words"}, ["p", "p"], ["a b c", "d"]) == [3.0, 1.0]
    report = alignkit.evaluate(model, prompts=Dataset.from_list(pairs(2)), tokenizer=tokenizer,
                               rewards=[{"kind": "length"}], sampling={"num_samples": 2, "max_new_tokens": 4},
                               output_dir=str(tmp_path / "eval"), progress=False)
    assert report["n_prompts"] == 2 and "length" in report["rewards"]


def test_a_trl_dpo_script_ports_line_for_line(tmp_path, base_dir, monkeypatch):
    """The README's TRL DPO script and its alignkit port: the port is no longer, runs on a model object
    and a datasets.Dataset, logs TRL's metric names to TensorBoard, and leaves an adapter in final/ that
    PeftModel.from_pretrained(base, final) loads."""
    import re
    from pathlib import Path

    from peft import PeftModel
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    trl_script, port = re.findall(r"```python\n(.*?)```", readme.split("## From Python")[1], re.S)[:2]
    assert "DPOTrainer" in trl_script and "alignkit.train" in port
    assert len(port.splitlines()) <= len(trl_script.splitlines())

    monkeypatch.chdir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    scope = {"model": model, "tokenizer": AutoTokenizer.from_pretrained(base_dir),
             "dataset": Dataset.from_list(pairs())}
    exec(port.replace('"max_steps": 100', '"max_steps": 2, "batch_size": 4, "progress": False'), scope)
    run = scope["run"]
    assert run.final == Path("runs/dpo/final")

    events = EventAccumulator(str(run.output_dir / "tensorboard"))
    events.Reload()
    trl_names = {"train/loss", "train/rewards/accuracies", "train/rewards/margins", "train/rewards/chosen",
                 "train/rewards/rejected", "train/logps/chosen", "train/logps/rejected", "train/learning_rate",
                 "train/grad_norm", "train/epoch", "train/num_tokens"}
    assert trl_names <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/rewards/accuracies")] == [1, 2]
    margins = [e.value for e in events.Scalars("train/rewards/margins")]
    assert margins == pytest.approx([r["rewards/margins"] for r in run.metrics[:2]])

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), run.final)
    assert peft_model.peft_config["default"].r == 8
    assert not (run.final / "merged").exists() and not (run.final / "model.safetensors").exists()


def test_a_missing_tracker_package_is_a_clear_error_before_training(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="train.tracker: wandb needs the wandb package, which is not installed"):
        alignkit.train("dpo", model="no-such-model-is-loaded", train_data=pairs(), train={"tracker": "wandb"})


def test_wandb_logs_offline_under_trl_names(tmp_path):
    """In a fresh process: after a TensorBoard run in the same process, W&B (0.31) wrote only its header."""
    import os
    import subprocess
    import sys

    pytest.importorskip("wandb")
    script = (
        "import alignkit, wandb\n"
        f"alignkit.train('dpo', model='tiny-llama', train_data='alignkit:tiny_pairs.jsonl', output_dir={str(tmp_path / 'wb')!r},"
        " train={'max_steps': 2, 'batch_size': 4, 'tracker': 'wandb', 'progress': False})\n"
        "wandb.finish()\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=600, capture_output=True)
    (log,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    data = log.read_bytes()
    for name in (b"train/rewards/accuracies", b"train/rewards/margins", b"train/learning_rate", b"train/num_tokens"):
        assert name in data, name


def test_the_cli_is_a_layer_over_the_api_same_results(tmp_path, capsys):
    """`alignkit eval` / `alignkit score` and alignkit.evaluate / alignkit.score on one config give one result."""
    from alignkit.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "eval_tiny.yaml")
    small = ["max_prompts=2", "sampling.num_samples=2", "sampling.max_new_tokens=6", "best_of_k=2", "progress=false"]
    assert main(["eval", config, *small, f"output_dir={tmp_path / 'cli'}"]) == 0
    report = alignkit.evaluate(config=config, overrides=[*small, f"output_dir={tmp_path / 'api'}"])
    cli = json.loads((tmp_path / "cli" / "eval.json").read_text())
    assert cli["rewards"] == json.loads(json.dumps(report["rewards"])) and cli["kl"] == report["kl"]
    assert (tmp_path / "cli" / "samples.jsonl").read_text() == (tmp_path / "api" / "samples.jsonl").read_text()

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pairs(3)))
    (tmp_path / "reward.yaml").write_text("rewards:\n  - kind: length\n  - kind: vader\n")
    assert main(["score", "--reward", str(tmp_path / "reward.yaml"), "--data", str(data),
                 "--out", str(tmp_path / "cli.jsonl")]) == 0
    assert "scored 3 rows" in capsys.readouterr().out
    out = alignkit.score(str(tmp_path / "reward.yaml"), data=data, output=tmp_path / "api.jsonl")
    assert out.read_text() == (tmp_path / "cli.jsonl").read_text()
