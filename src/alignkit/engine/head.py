"""The LM head and log-softmax at response positions only, in chunks.

``[tokens, vocab]`` logits in fp32 are the largest buffer of preference training
(vocab 32k x 4k tokens = 0.5 GB). :class:`ChunkedTargetLogProb` never holds more
than ``chunk_size`` rows of them: the forward keeps only each token's log-sum-exp,
and the backward recomputes one chunk of logits at a time to form
``d logp / d logits = onehot(target) - softmax``. The cost is one extra head
matmul in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ChunkedTargetLogProb(torch.autograd.Function):
    """``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` in fp32, chunked."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int):  # hidden [n, H], weight [V, H]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = F.linear(hidden[sl], weight, bias).float()  # [c, V]
            lse[sl] = torch.logsumexp(logits, dim=-1)
            out[sl] = logits.gather(-1, targets[sl, None]).squeeze(-1) - lse[sl]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out [n]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if bias is not None else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            h = hidden[sl]
            logits = F.linear(h, weight, bias).float()
            grad_logits = -torch.exp(logits - lse[sl, None])  # -softmax
            grad_logits.scatter_add_(-1, targets[sl, None], torch.ones_like(grad_logits[:, :1]))
            grad_logits *= grad_out[sl, None].float()  # [c, V]
            if grad_hidden is not None:
                grad_hidden[sl] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            grad_weight += grad_logits.T @ h.float()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        grad_weight = grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype) if ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def target_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Log-probs of ``targets`` [n] from hidden states [n, H] through a linear ``head``; fp32 [n]."""
    weight = head.weight
    bias = getattr(head, "bias", None)
    return ChunkedTargetLogProb.apply(hidden, weight, bias, targets, chunk_size)


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
