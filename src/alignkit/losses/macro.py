"""MA-RLHF (Chai et al. 2024, arXiv 2410.02743): PPO over macro actions instead of tokens.

A macro action is a run of consecutive tokens (a fixed n-gram, or the tokens up to and
including a punctuation mark). The MDP's decisions are taken once per macro action, so:

- the state value is read at the first token of each macro action, ``V(s_m)``;
- the reward of a macro action is the sum of its tokens' rewards, ``R_m = sum_{t in m} r_t``;
- GAE runs over macro steps (paper, sec. 3.2): ``delta_m = R_m + gamma V(s_{m+1}) - V(s_m)``,
  ``A_m = delta_m + gamma lam A_{m+1}``, and the episode ends at the last macro action;
- the importance ratio is that of the whole macro action,
  ``rho_m = pi(a_m|s_m) / pi_old(a_m|s_m) = exp(sum_{t in m} (log pi - log pi_old)_t)``,
  clipped as in PPO, and a sequence's loss is the mean over its macro actions.

With n = 1 every token is its own macro action and each function here equals its
token-level counterpart in :mod:`alignkit.losses.rl` exactly (a test checks it).

Layout: ``macro_ids [N, T]`` (long) gives each token the index of its macro action,
0, 1, 2, ... from the first response token, non-decreasing; right padding as in
:mod:`alignkit.losses.rl` (masked positions are ignored). Macro tensors are ``[N, M]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignkit.losses.rl import clipped_terms, gae, masked_mean, whiten

PUNCTUATION = ".,;:!?\n"


# ---------------------------------------------------------------- segmentation


def ngram_macro_ids(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Fixed n-gram macro actions: token t belongs to macro ``t // n`` ``[N, T]``."""
    if n < 1:
        raise ValueError(f"macro actions need n >= 1, got {n}")
    T = mask.shape[1]
    return (torch.arange(T, device=mask.device) // n).expand_as(mask).clone()


def punctuation_macro_ids(token_texts: Sequence[Sequence[str]], width: int, marks: str = PUNCTUATION,
                          max_length: int | None = None) -> torch.Tensor:
    """Punctuation-based macro actions ``[N, width]``: a macro action ends at a token whose text
    ends with one of ``marks`` (after trailing spaces), or after ``max_length`` tokens.

    ``token_texts[i][t]`` is the decoded text of response token t of row i (MA-RLHF's
    "parsing-based" termination, with punctuation marking the boundaries).
    """
    ids = torch.zeros(len(token_texts), width, dtype=torch.long)
    for i, texts in enumerate(token_texts):
        macro, run = 0, 0
        for t, text in enumerate(texts[:width]):
            ids[i, t] = macro
            run += 1
            stripped = text.rstrip(" ")
            if (stripped and stripped[-1] in marks) or (max_length is not None and run >= max_length):
                macro, run = macro + 1, 0
    return ids


# ---------------------------------------------------------------- tokens <-> macro actions


def num_macros(macro_ids: torch.Tensor, mask: torch.Tensor) -> int:
    return int(torch.where(mask, macro_ids, 0).max()) + 1 if mask.any() else 1


def macro_sum(x: torch.Tensor, macro_ids: torch.Tensor, mask: torch.Tensor, M: int) -> torch.Tensor:
    """``[N, M]`` sum of ``x`` over the valid tokens of each macro action."""
    ids = torch.where(mask, macro_ids, 0)
    return x.new_zeros(x.shape[0], M).scatter_add(1, ids, torch.where(mask, x, 0.0))


def macro_mask(macro_ids: torch.Tensor, mask: torch.Tensor, M: int) -> torch.Tensor:
    """``[N, M]`` True on the macro actions that hold a valid token."""
    return macro_sum(mask.float(), macro_ids, mask, M) > 0


def macro_starts(macro_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` True on the first valid token of each macro action (where its state is)."""
    previous = torch.cat([torch.full_like(macro_ids[:, :1], -1), macro_ids[:, :-1]], dim=1)
    return mask & (macro_ids != previous)


def macro_first(x: torch.Tensor, macro_ids: torch.Tensor, mask: torch.Tensor, M: int) -> torch.Tensor:
    """``[N, M]`` the value of ``x`` at the first token of each macro action (e.g. ``V(s_m)``)."""
    return macro_sum(x, macro_ids, macro_starts(macro_ids, mask), M)


def to_tokens(xm: torch.Tensor, macro_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]``: every token gets its macro action's value; 0 at masked positions."""
    return torch.where(mask, xm.gather(1, torch.where(mask, macro_ids, 0)), 0.0)


# ---------------------------------------------------------------- advantages and loss


@torch.no_grad()
def macro_gae(rewards: torch.Tensor, values: torch.Tensor, macro_ids: torch.Tensor, mask: torch.Tensor,
              gamma: float, lam: float, whiten_advantages: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over macro actions (MA-RLHF, sec. 3.2), broadcast back to tokens: ``(advantages, returns)`` ``[N, T]``.

    ``rewards``/``values`` are per token (``values[t] = V(s_t)``); each macro action takes
    the sum of its rewards and the value of its first token. ``whiten_advantages``
    whitens over the batch's macro actions (PPO's whitening, one entry per decision).
    """
    M = num_macros(macro_ids, mask)
    valid = macro_mask(macro_ids, mask, M)  # (N, M)
    advantages, returns = gae(macro_sum(rewards, macro_ids, mask, M), macro_first(values, macro_ids, mask, M),
                              valid, gamma, lam)  # (N, M) each
    if whiten_advantages:
        advantages = whiten(advantages, valid)
    return to_tokens(advantages, macro_ids, mask), to_tokens(returns, macro_ids, mask)


def macro_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    macro_ids: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate with macro-action ratios, per sequence ``[N]``.

    ``rho_m = exp(sum_{t in m} (log pi - log pi_old)_t)``; per macro action
    ``max(-A_m rho_m, -A_m clip(rho_m, 1 - eps, 1 + eps))``; the mean over the valid macro
    actions of each row. ``advantages [N, T]`` is constant within a macro action (as
    :func:`macro_gae` gives it); its first token's value is used.
    """
    M = num_macros(macro_ids, mask)
    valid = macro_mask(macro_ids, mask, M)  # (N, M)
    log_ratio = macro_sum(logprobs - old_logprobs, macro_ids, mask, M)  # (N, M)
    adv = macro_first(advantages, macro_ids, mask, M)  # (N, M)
    per_macro, metrics = clipped_terms(log_ratio.exp(), log_ratio, adv, valid, clip_eps, clip_eps)
    return masked_mean(per_macro, valid, dim=1), metrics  # (N,)
