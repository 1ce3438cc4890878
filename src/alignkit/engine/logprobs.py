"""The log-prob engine: summed response log-probs ``[B, K]`` for B prompts x K responses.

Every method goes through :func:`sequence_logps`. It never computes the LM head
over prompt positions nor materialises ``[tokens, vocab]`` fp32 logits at once
(see :mod:`alignkit.engine.head`), and it runs each prompt once for all its
responses when the model accepts a block-causal mask (see
:mod:`alignkit.engine.layout`). Results equal the naive full-logits computation
to 1e-5 in fp32 (``tests/engine/test_logprobs.py``).

The model is wrapped in :class:`SequenceScorer`, an ``nn.Module`` whose forward
does the whole computation, so that Accelerate's DDP/FSDP wrappers see a normal
forward call (calling the transformer body directly would bypass them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alignkit.engine.batch import ResponseBatch
from alignkit.engine.head import target_logprobs, token_entropy
from alignkit.engine.layout import Layout, packed_layout, padded_layout


def unwrap_causal_lm(model: nn.Module) -> nn.Module:
    """The ``*ForCausalLM`` inside DDP/FSDP/compile/peft wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


@dataclass
class LogProbs:
    """Engine output. Masked (padding) responses hold 0 everywhere."""

    logps: torch.Tensor  # [B, K] fp32, summed response-token log-probs
    lengths: torch.Tensor  # [B, K] response token counts
    mask: torch.Tensor  # [B, K] bool
    token_logps: torch.Tensor | None = None  # [B, K, L] fp32 when per_token=True
    token_mask: torch.Tensor | None = None  # [B, K, L] bool
    entropy: torch.Tensor | None = None  # [B, K, L] fp32 when entropy=True
    hidden: torch.Tensor | None = None  # [B, K, L, H] states predicting each token, when hidden=True

    def mean_nll(self) -> torch.Tensor:
        """Mean negative log-likelihood per response token over the batch."""
        return -self.logps.sum() / self.lengths.sum().clamp(min=1)


class SequenceScorer(nn.Module):
    """Wraps a causal LM; ``forward(layout)`` returns response-token log-probs ``[n]``.

    ``compile=True`` (config ``engine.compile``) runs the transformer body through
    ``torch.compile(dynamic=True)`` (a string names the backend); the LM head and log-softmax stay eager (a custom
    autograd function over few rows). The compiled body is built on first use and is
    not a registered submodule, so ``state_dict`` and ``parameters`` are unchanged.
    """

    def __init__(self, lm: nn.Module, chunk_size: int = 1024, compile: bool | str = False):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        self.compile = compile
        self._packing_ok: bool | None = None
        self.train(lm.training)

    def _body(self, causal_lm: nn.Module) -> nn.Module:
        body = getattr(causal_lm, causal_lm.base_model_prefix)
        if not self.compile:
            return body
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not body:
            backend = self.compile if isinstance(self.compile, str) else "inductor"
            cached = (body, torch.compile(body, dynamic=True, backend=backend))
            self.__dict__["_compiled"] = cached  # a plain attribute: not a submodule
        return cached[1]

    def forward(self, layout: Layout, entropy: bool = False, hidden: bool = False):
        causal_lm = unwrap_causal_lm(self.lm)
        states = self._body(causal_lm)(
            input_ids=layout.input_ids,
            attention_mask=layout.attention_mask,
            position_ids=layout.position_ids,
            use_cache=False,
        ).last_hidden_state  # [R, T, H]
        picked = states[layout.pred_rows, layout.pred_cols]  # [n, H]
        head = causal_lm.get_output_embeddings()
        logps = target_logprobs(picked, head, layout.targets, self.chunk_size)
        ent = token_entropy(picked, head, self.chunk_size) if entropy else None
        return logps, ent, (picked if hidden else None)

    @property
    def attention_span(self) -> float | None:
        """Row length at which a packed row's attention costs as much as its matmuls, or None when the
        model's layers are not found: one decoder layer's matmul weights ``P`` over ``2 x heads x head_dim``
        (per position the matmuls take ``2P`` FLOPs, attention over a row of ``T`` takes ``4 T heads
        head_dim``). SmolLM2-135M: 3.54M / (2 x 576) = 3070 positions. Sizes the packed rows
        (:func:`~alignkit.engine.layout.best_row_capacity`)."""
        if "_attention_span" not in self.__dict__:
            self.__dict__["_attention_span"] = _attention_span(unwrap_causal_lm(self.lm))
        return self.__dict__["_attention_span"]

    def supports_packing(self, pad_id: int) -> bool:
        """Whether the model honours the block-causal mask (probed once, on 6 tokens)."""
        if self._packing_ok is None:
            prompts, responses = [[1, 2]], [[[3, 4], [5, 6]]]
            modes = {module: module.training for module in self.modules()}
            self.eval()
            with torch.no_grad():
                try:
                    device = next(self.parameters()).device
                    packed = self(_to(packed_layout(prompts, responses, 2, pad_id), device))[0]
                    plain = self(_to(padded_layout(prompts, responses, 2, pad_id), device))[0]
                    self._packing_ok = bool(torch.allclose(packed, plain, atol=1e-4))
                except Exception:  # noqa: BLE001  (any failure means: use the padded layout)
                    self._packing_ok = False
            for module, mode in modes.items():
                module.training = mode
        return self._packing_ok


def _attention_span(causal_lm: nn.Module) -> float | None:
    config = getattr(causal_lm, "config", None)
    body = getattr(causal_lm, getattr(causal_lm, "base_model_prefix", ""), None)
    layers = getattr(body, "layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not layers or not heads or not getattr(config, "hidden_size", None):
        return None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    matmul = sum(p.numel() for p in layers[0].parameters() if p.dim() == 2)
    return matmul / (2 * heads * head_dim) if matmul else None


def _to(layout: Layout, device: torch.device) -> Layout:
    return Layout(*(t.to(device) for t in vars(layout).values()))


def build_layout(batch: ResponseBatch, pad_id: int, share_prompt: bool, padding_side: str = "right",
                 attention_span: float | None = None) -> Layout:
    width = batch.max_responses
    if share_prompt:
        return packed_layout(batch.prompt_ids, batch.response_ids, width, pad_id, attention_span=attention_span)
    return padded_layout(batch.prompt_ids, batch.response_ids, width, pad_id, side=padding_side)


def sequence_logps(
    scorer: nn.Module,
    batch: ResponseBatch,
    *,
    pad_id: int = 0,
    share_prompt: bool = True,
    per_token: bool = False,
    entropy: bool = False,
    hidden: bool = False,
    padding_side: str = "right",
) -> LogProbs:
    """Summed response log-probs ``[B, K]`` (and optional per-token outputs ``[B, K, L]``).

    ``scorer`` is a :class:`SequenceScorer`, possibly wrapped by Accelerate.
    ``share_prompt`` falls back to padded rows when the model cannot take the
    block-causal mask.
    """
    inner = scorer
    while not isinstance(inner, SequenceScorer):
        inner = inner.module if hasattr(inner, "module") else inner._orig_mod
    if share_prompt and not inner.supports_packing(pad_id):
        share_prompt = False
    device = next(inner.parameters()).device
    layout = _to(build_layout(batch, pad_id, share_prompt, padding_side, inner.attention_span), device)
    tok_logps, tok_entropy, tok_hidden = scorer(layout, entropy=entropy, hidden=hidden)

    B, K = batch.mask.shape
    lengths = batch.response_lengths().to(device)
    logps = torch.zeros(B * K, dtype=torch.float32, device=device).index_add(0, layout.flat_index, tok_logps)
    out = LogProbs(logps=logps.view(B, K), lengths=lengths, mask=batch.mask.to(device))
    if per_token or entropy or hidden:
        L = max(int(lengths.max()) if lengths.numel() else 0, 1)
        slot = layout.flat_index * L + layout.token_index

        def scatter(values: torch.Tensor) -> torch.Tensor:
            shape = (B * K * L, *values.shape[1:])
            return values.new_zeros(shape).index_copy(0, slot, values).view(B, K, L, *values.shape[1:])

        out.token_mask = torch.arange(L, device=device) < lengths[..., None]
        out.token_logps = scatter(tok_logps)
        if tok_entropy is not None:
            out.entropy = scatter(tok_entropy)
        if tok_hidden is not None:
            out.hidden = scatter(tok_hidden)
    return out
