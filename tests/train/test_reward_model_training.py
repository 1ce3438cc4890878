"""Reward-model training from the CLI path: built-in pairs, and the real HH / qa-feedback data."""

import json

import pytest

from alignkit.config import load_config
from alignkit.rewards.base import build_reward
from alignkit.train.run import run_train


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_minilm_reward_model_learns_builtin_pairs_and_scores_centered(tmp_path):
    cfg = load_config("configs/reward_model_tiny.yaml", [f"train.output_dir={tmp_path}", "train.progress=false"])
    run_train(cfg)
    final = records(tmp_path)[-1]
    assert final["eval/accuracy"] >= 0.75  # measured 1.0: polite answers vs curt refusals
    reward = build_reward({"kind": "model", "path": str(tmp_path / "final")})
    scores = reward.score(["\n\nHuman: Any tips for tea?\n\nAssistant:"] * 2,
                          [" Happy to help. Boil fresh water and let it steep.", " Figure it out yourself."])
    assert scores[0] > scores[1]
    saved = json.loads((tmp_path / "final" / "alignkit_reward.json").read_text())
    assert saved["center_std"] > 0  # measured beside the mean on the training responses


@pytest.mark.parametrize("dataset", ["hh", "qa"])
def test_reward_model_on_real_feedback_reports_heldout_accuracy(tmp_path, shared_data, dataset):
    config = {"hh": "configs/reward_model_hh.yaml", "qa": "configs/reward_model_qa_kwise.yaml"}[dataset]
    path = {"hh": "hh-rlhf-harmless/test.jsonl.gz", "qa": "qa-feedback/dev_feedback.json"}[dataset]
    cfg = load_config(config, [
        f"data.train={shared_data / path}", "data.max_rows=96", "data.eval_size=32", "train.max_steps=6",
        "train.batch_size=8", "train.eval_every=0", "train.warmup_steps=0", "reward_model.max_length=128",
        f"train.output_dir={tmp_path}", "train.progress=false", "reward_model.center_examples=16",
    ])
    run_train(cfg)
    final = records(tmp_path)[-1]
    assert 0.0 <= final["eval/accuracy"] <= 1.0 and final["eval/pairs"] > 0
    saved = json.loads((tmp_path / "final" / "alignkit_reward.json").read_text())
    assert saved["max_length"] == 128 and saved["center_mean"] is not None and saved["center_std"] > 0


def test_evaluation_scores_each_held_out_batch_once():
    """4 rankings in batches of 2: 2 forward passes (the loss reuses the rewards), and the loss equals training's."""
    import torch

    from alignkit.data.schema import Example
    from alignkit.models.heads import ScalarHead, ValueModel, backbone_of
    from alignkit.models.reward_model import RewardModel
    from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
    from alignkit.train.reward_model import RewardModelMethod

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    lm = build_tiny_model(tokenizer, hidden_size=32, num_layers=2)
    model = RewardModel("causal", ValueModel(backbone_of(lm), ScalarHead(32)), max_length=64).eval()
    examples = [Example(prompt=f"Q{i}:", responses=[" yes", " no thanks", " maybe"], scores=[2.0, 0.0, 1.0])
                for i in range(4)]
    method = RewardModelMethod(tokenizer, "bradley_terry", {}, 64)
    calls = []
    rewards = method.rewards
    method.rewards = lambda module, chunk: calls.append(len(chunk)) or rewards(module, chunk)
    out = method.evaluate(model, examples, batch_size=2)
    assert calls == [2, 2] and out["pairs"] == 12  # 3 ordered pairs per ranking
    with torch.no_grad():
        expected = sum(float(method.loss(model, examples[i : i + 2])[0]) for i in (0, 2)) / 4
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
