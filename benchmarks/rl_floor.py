"""The fastest a GRPO step of ``rl_throughput.py`` can be on this machine, in fp32, by anyone.

    python benchmarks/rl_floor.py --model smollm2 --prompts 2 --k 8 --new-tokens 64 [--trl-s-per-step 10.98]

A step of ``rl_throughput.py`` is a rollout (``prompts x k`` rows sampled ``--new-tokens`` tokens
long with the KV cache) and one forward + backward over its tokens. Two measured floors bound it
from below, for any implementation of the same fp32 math on this machine:

- **decode**: every decode step multiplies the ``prompts x k`` rows' activations by every weight
  matrix of the model (the LM head included), so each step reads all the weights once. Timed here
  as exactly that and nothing else, ``x [R, in] @ W.T`` for each 2-D weight in turn, best of
  ``--repeats``: the sampling of ``--new-tokens`` tokens takes at least that many passes. It is
  set by memory bandwidth when the weights do not fit in the caches, and is reported as GB/s;
- **update**: the forward and backward matmuls over the step's tokens, ``3 x`` the forward
  matmuls ``x [N, in] @ W.T`` for N = prompt + response tokens (the LM head at the response
  tokens only, as a scorer that keeps only what the loss reads), timed at their real shapes.

Attention, norms, activations, the sampler's softmax, the optimizer and all Python are left
out, so the true floor is higher. With ``--trl-s-per-step`` (TRL's measured s/step in the same
setting, from ``rl_throughput.py``) it prints the largest speed-up over TRL that the floors allow.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch allocations, kernel selection
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "smollm2"], default="smollm2")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=20, help="mean prompt length (the review prompts: ~20)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trl-s-per-step", type=float, default=0.0, help="TRL's measured s/step, for the bound")
    args = p.parse_args()

    import torch
    from rl_throughput import prepare
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        prepare(args.model, Path(tmp), args.prompts)
        lm = AutoModelForCausalLM.from_pretrained(Path(tmp) / "model", dtype=torch.float32)
    head = lm.get_output_embeddings().weight
    body = [w for name, w in lm.named_parameters() if w.dim() == 2 and "embed" not in name and w is not head]
    weights = [w.detach() for w in (*body, head)]
    rows = args.prompts * args.k
    tokens = rows * args.new_tokens + args.prompts * args.prompt_tokens * args.k  # what TRL's padded batch scores
    response_tokens = rows * args.new_tokens
    nbytes = sum(w.numel() * w.element_size() for w in weights)

    with torch.no_grad():
        decode_inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}

        def decode_step():
            for w in weights:
                decode_inputs[w.shape[1]] @ w.t()

        step_s = best_of(decode_step, args.repeats)
        update_inputs = {w.shape[1]: torch.randn(tokens, w.shape[1]) for w in body}
        head_input = torch.randn(response_tokens, head.shape[1])

        def forward_matmuls():
            for w in body:
                update_inputs[w.shape[1]] @ w.t()
            head_input @ head.detach().t()

        forward_s = best_of(forward_matmuls, args.repeats)
    flops = 2 * (sum(w.numel() for w in body) * tokens + head.numel() * response_tokens)
    decode_floor = step_s * args.new_tokens
    update_floor = 3 * forward_s
    print(f"model {args.model}: {nbytes / 1e6:.0f} MB of fp32 matmul weights, {torch.get_num_threads()} threads")
    print(f"decode: one pass of {rows} rows through every weight {step_s * 1e3:.1f} ms "
          f"({nbytes / step_s / 1e9:.1f} GB/s); x {args.new_tokens} tokens = {decode_floor:.2f} s")
    print(f"update: forward matmuls over {tokens} tokens {forward_s:.2f} s ({flops / forward_s / 1e9:.0f} GFLOP/s); "
          f"x 3 (forward + backward) = {update_floor:.2f} s")
    floor = decode_floor + update_floor
    print(f"floor: {floor:.2f} s/step = {rows / floor:.2f} samples/s at most")
    if args.trl_s_per_step:
        print(f"TRL {args.trl_s_per_step:.2f} s/step: no fp32 implementation can exceed "
              f"{args.trl_s_per_step / floor:.2f}x TRL's samples/s here")


if __name__ == "__main__":
    main()
