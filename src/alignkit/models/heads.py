"""Scalar heads on a transformer body: the reward head and PPO's critic.

A causal LM is ``body`` (the transformer, ``model.<base_model_prefix>``) plus an
LM head. A reward model or a value model keeps the body and replaces the LM head
with :class:`ScalarHead`, one number per token:

- the reward model reads it at the last real token (:func:`last_token_index`);
- :class:`ValueModel` (PPO's critic) returns it at every token.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ScalarHead(nn.Module):
    """A dropout-free ``Linear(hidden_size, 1)``: hidden states ``[..., H]`` -> scalars ``[...]``.

    ``init="normal"`` draws the weight with std ``1/sqrt(hidden_size+1)``, the
    reward/value head init of OpenAI's RLHF code (Stiennon et al. 2020, p. 11,
    https://arxiv.org/abs/2009.01325, kept in Huang et al.'s "N implementation details
    of RLHF" reproductions): outputs start with about the variance of one hidden
    feature; ``init="zeros"`` starts at exactly 0 everywhere (a critic that predicts no
    value before it has seen a return). The bias starts at 0 either way. The head
    computes in its own dtype (keep it fp32 under a bf16 body).
    """

    def __init__(self, hidden_size: int, init: str = "normal"):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        if init == "normal":
            nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1))
        elif init == "zeros":
            nn.init.zeros_(self.linear.weight)
        else:
            raise ValueError(f"unknown head init {init!r}; expected 'normal' or 'zeros'")
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)  # (..., H) -> (...)


def backbone_of(model: nn.Module) -> nn.Module:
    """The transformer body of a causal LM (``LlamaForCausalLM.model``, ``GPT2LMHeadModel.transformer``).

    A PEFT-wrapped model is unwrapped first (its LoRA layers live inside the body, so
    they stay active). A model that is already a body is returned as is.
    """
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix, model) if prefix else model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real (mask 1) token of each row: ``[N, T]`` -> ``[N]`` (long).

    Meant for right padding, where it equals ``mask.sum(-1) - 1``; it takes the
    rightmost 1, so it is also right for left padding. A row with no real token gives 0.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=-1)  # (N,)


class ValueModel(nn.Module):
    """``body`` + :class:`ScalarHead`: a value (or reward) for every token, ``[N, T]``.

    PPO uses it as the critic; :class:`~alignkit.models.reward_model.RewardModel`
    reads it at the last real token.
    """

    def __init__(self, body: nn.Module, head: ScalarHead):
        super().__init__()
        self.body = body
        self.head = head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"position_ids": position_ids} if position_ids is not None else {}
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        return self.head(out.last_hidden_state)  # (N, T, H) -> (N, T)
