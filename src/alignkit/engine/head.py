"""The LM head and log-softmax at response positions only, in chunks.

``[tokens, vocab]`` logits in fp32 are the largest buffer of preference training
(vocab 32k x 4k tokens = 0.5 GB). :class:`ChunkedTargetLogProb` computes them
``chunk_size`` rows at a time: the forward keeps only each token's log-sum-exp,
and the backward recomputes one chunk of logits at a time to form
``d logp / d logits = onehot(target) - softmax``. The cost is one extra head
matmul in the backward pass, unless the softmax of all rows fits
:data:`KEEP_PROBS_BYTES` (a few hundred response tokens of a 32k vocabulary), in
which case the forward keeps it and the backward reuses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ChunkedTargetLogProb(torch.autograd.Function):
    """``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` in fp32, chunked.

    ``keep_probs``: the forward keeps each chunk's softmax ``[c, V]`` for the backward
    (unnormalised, with its sums) instead of recomputing it: one head matmul and three
    elementwise passes fewer. :func:`target_logprobs` asks for it only when all of them
    fit ``KEEP_PROBS_BYTES``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, keep_probs: bool = False):  # [n, H], [V, H]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        kept = []
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = F.linear(hidden[sl], weight, bias).float()  # [c, V], a fresh buffer
            target = logits.gather(-1, targets[sl, None]).squeeze(-1)
            peak = logits.amax(-1, keepdim=True)  # [c, 1]
            total = logits.sub_(peak).exp_().sum(-1, keepdim=True)  # logits now hold exp(logit - peak)
            lse[sl] = (peak + total.log()).squeeze(-1)  # logsumexp, as torch.logsumexp computes it
            out[sl] = target - lse[sl]
            if keep_probs:  # unnormalised: the backward folds 1 / total into its one pass over [c, V]
                kept.append((logits, total.squeeze(-1)))
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.kept = chunk_size, kept
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out [n]
        # d logp_i / d logits_i = onehot(t_i) - p_i, so with g = grad_out and gp = g * p:
        #   grad_hidden = g * W[t] - gp @ W,  grad_W = index_add(t, g * h) - gp.T @ h,  grad_b = index_add(t, g) - sum(gp)
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if bias is not None else None
        for i, start in enumerate(range(0, hidden.shape[0], ctx.chunk_size)):
            sl = slice(start, start + ctx.chunk_size)
            h, t, g = hidden[sl], targets[sl], grad_out[sl].float()
            if ctx.kept:
                unnormalised, total = ctx.kept[i]
                gp = unnormalised.mul_((g / total)[:, None])  # g * softmax, [c, V], in the kept buffer
            else:
                gp = F.linear(h, weight, bias).float().sub_(lse[sl, None]).exp_().mul_(g[:, None])
            if grad_hidden is not None:
                own = weight[t].float() * g[:, None]  # [c, H]
                grad_hidden[sl] = (own - (gp.to(weight.dtype) @ weight).float()).to(hidden.dtype)
            h32 = h.float()
            grad_weight.addmm_(gp.T, h32, alpha=-1.0).index_add_(0, t, h32 * g[:, None])
            if grad_bias is not None:
                grad_bias.sub_(gp.sum(0)).index_add_(0, t, g)
        ctx.kept = []
        grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype) if ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None, None


KEEP_PROBS_BYTES = 256 * 2**20
"""Keep the softmax for the backward when ``n x V`` fp32 fits this; recompute it otherwise."""


def target_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Log-probs of ``targets`` [n] from hidden states [n, H] through a linear ``head``; fp32 [n]."""
    weight = head.weight
    bias = getattr(head, "bias", None)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    keep = needs_grad and hidden.shape[0] * weight.shape[0] * 4 <= KEEP_PROBS_BYTES
    return ChunkedTargetLogProb.apply(hidden, weight, bias, targets, chunk_size, keep)


def token_entropy(hidden: torch.Tensor, head: torch.nn.Module, chunk_size: int) -> torch.Tensor:
    """Entropy of the next-token distribution at each hidden state [n] (fp32, differentiable).

    Chunks are checkpointed so that the backward holds one chunk of logits at a time.
    """
    from torch.utils.checkpoint import checkpoint

    def chunk_entropy(h: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(head(h).float(), dim=-1)
        return -(logp.exp() * logp).sum(-1)

    parts = [
        checkpoint(chunk_entropy, hidden[s : s + chunk_size], use_reentrant=False)
        if torch.is_grad_enabled()
        else chunk_entropy(hidden[s : s + chunk_size])
        for s in range(0, hidden.shape[0], chunk_size)
    ]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
