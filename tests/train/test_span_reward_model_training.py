"""Fine-grained reward-model training from the CLI path: a few span rows, and the real qa-feedback."""

import json

import pytest

from alignkit.config import load_config
from alignkit.errors import ConfigError
from alignkit.rewards.base import build_reward
from alignkit.train.run import run_train
from alignkit.train.span_reward_model import SpanRewardModelMethod, majority_label


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def span_rows(n):
    """Question i: an on-topic first sentence, then an off-topic one marked Irrelevant."""
    rows = []
    for i in range(n):
        good, bad = f"The answer to question {i} is {i}.", "Bananas are yellow and grow in warm places."
        response = f"{good} {bad}"
        rows.append({"prompt": f"question {i}: what is it?", "response": response,
                     "spans": [{"start": len(good) + 1, "end": len(response), "category": "Irrelevant"}]})
    return rows


def test_a_few_span_rows_train_and_report_heldout_metrics_against_the_majority(tmp_path, tiny_encoder):
    data = tmp_path / "spans.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in span_rows(12)))
    out = tmp_path / "run"
    cfg = load_config("configs/rm_relevance_qa.yaml", [
        f"model.name_or_path={tiny_encoder}", f"data.train={data}", "data.format=auto", "data.eval_size=4",
        "span_reward_model.level=sentence", "span_reward_model.min_span_words=0", "span_reward_model.max_length=64",
        "train.max_steps=3", "train.batch_size=4", "train.warmup_steps=0", f"train.output_dir={out}",
        "train.progress=false", "span_reward_model.validation_size=2", "span_reward_model.error_weight=2.0",
    ])
    run_train(cfg)
    final = records(out)[-1]
    # 2 of the 8 training questions choose the threshold (4 segments); it is saved with the model
    assert 0.0 <= final["eval/validation_accuracy"] <= 1.0 and final["eval/validation_accuracy"] * 4 % 1 == 0
    saved = json.loads((out / "final" / "alignkit_span_reward.json").read_text())
    assert saved["threshold"] == pytest.approx(final["eval/threshold"])
    # 4 held-out questions x 2 sentences; the labels are half errors, so the majority class (a tie:
    # "no error") is right on 4 of 8 and finds no error (F1 0)
    assert final["eval/segments"] == 8 and final["eval/error_share"] == 0.5
    assert final["eval/majority_accuracy"] == 0.5 and final["eval/majority_f1"] == 0.0
    assert 0.0 <= final["eval/accuracy"] <= 1.0 and 0.0 <= final["eval/f1"] <= 1.0
    reward = build_reward({"kind": "span_model", "path": str(out / "final")})
    segments = reward.score_segments(["question 1: what is it?"], [span_rows(2)[1]["response"]])[0]
    # "The answer to question 1 is 1." ends at character 30; the whole response at 74
    assert [end for end, _ in segments] == [30, 74] and all(v in (-1.0, 1.0) for _, v in segments)


def test_categories_are_required(tmp_path):
    cfg = load_config("configs/rm_relevance_qa.yaml", ["span_reward_model.categories=[]",
                                                       f"train.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="span_reward_model.categories: required"):
        run_train(cfg)


def test_units_count_labelled_segments_and_majority_prefers_no_error_on_ties():
    from alignkit.data.spans import SpanExample

    a = SpanExample("p", "x. y.", [(0, 2), (3, 5)], [1, None])
    b = SpanExample("p", "z.", [(0, 2)], [0])
    assert SpanRewardModelMethod(None, 0).units([a, b]) == 2.0
    assert majority_label([a, b]) == 0 and majority_label([a]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/rm_relevance_qa.yaml", "configs/rm_factuality_qa.yaml"])
def test_real_qa_feedback_span_models_train(tmp_path, shared_data, config):
    cfg = load_config(config, [
        f"data.train={shared_data / 'qa-feedback/dev_feedback.json'}", "data.max_rows=48", "data.eval_size=16",
        "train.max_steps=4", "span_reward_model.max_length=128", f"train.output_dir={tmp_path}",
        "train.progress=false",
    ])
    run_train(cfg)
    final = records(tmp_path)[-1]
    assert final["eval/segments"] > 0 and 0.0 <= final["eval/f1"] <= 1.0
