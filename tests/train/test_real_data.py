"""Offline methods and reward models on the real human-feedback data in ../shared/data."""

import json

import pytest

from alignkit.config import load_config
from alignkit.train.run import run_train


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_metrics(run_dir):
    return [r for r in records(run_dir) if "loss" in r]


@pytest.mark.parametrize("method", ["dpo", "rrhf", "pro", "listwise_dpo"])
@pytest.mark.parametrize("dataset", ["qa", "hh"])
def test_offline_methods_learn_on_real_preferences(tmp_path, shared_data, method, dataset):
    config = {"qa": "configs/listwise_qa_feedback.yaml", "hh": "configs/dpo_hh_harmless.yaml"}[dataset]
    cfg = load_config(config, [
        f"method={method}", "loss={}", "data.max_rows=40", "data.eval_size=8", "train.max_steps=12", "train.batch_size=8",
        "train.eval_every=0", f"train.output_dir={tmp_path}", "train.progress=false",
        f"data.train={shared_data / ('qa-feedback/dev_feedback.json' if dataset == 'qa' else 'hh-rlhf-harmless/test.jsonl.gz')}",
        "train.learning_rate=1e-3", "data.max_length=192", "data.max_prompt_length=128",
    ])
    run_train(cfg)
    losses = [r["loss"] for r in train_metrics(tmp_path)]
    # 12 steps of 8 over 32 training prompts = 3 epochs; the third epoch sees the same
    # prompts again, so its loss must be lower than the first's (measured: dpo qa
    # 0.71 -> 0.53, listwise_dpo hh 0.73 -> 0.30, pro qa 3.39 -> 3.25, rrhf hh 6.19 -> 5.83).
    assert sum(losses[8:]) < sum(losses[:4]), losses
    final = records(tmp_path)[-1]
    assert 0.0 <= final["eval/rewards/accuracies"] <= 1.0
    assert (tmp_path / "final" / "model.safetensors").is_file()
