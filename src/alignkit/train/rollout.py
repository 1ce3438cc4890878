"""Rollouts for on-policy RL from feedback (PPO, RLOO, GRPO): sample, score, evaluate per token.

Also here: :class:`ActorCritic` (the policy and its critic in one module), the per-token
reference, :func:`task_rewards` (score normalisation, clipping, the missing-EOS penalty)
and :func:`evaluate_policy` (reward and KL of fresh samples).

:func:`collect_rollout` takes B prompts and

1. samples K = ``sampling.num_samples`` responses to each from the current policy
   (:func:`alignkit.engine.generation.sample`; the trainer seeds it per step);
2. scores them with the reward: one number per response, or for a dense reward
   (``reward.dense``) a list of ``(char_end, value)`` segments per response, each
   mapped to the token that completes character ``char_end - 1`` (:func:`segments_to_tokens`);
3. runs the sampled tokens once through the engine, without gradient, for the per-token
   log-probs of the policy (the "old" policy of PPO's ratio) and of the reference, the
   token entropies and, with a critic, the values ``V(s_t)``.

Per-token tensors are ``[N, T]`` with N = B * K rows in prompt-major order (row
``b * K + k`` is sample k of prompt b), right-padded, and ``mask`` True on response
tokens: the layout of :mod:`alignkit.losses.rl`. A sample that is empty (the model
generated only padding) is stored as a lone EOS, so that every row has a token.

Character ends -> tokens, by incremental decoding. A reward sees the decoded response
(special tokens skipped, as ``sample`` decodes it), so a segment end is a character
position in that text. ``ends[j]`` is the number of characters of the text that are
fixed once tokens ``0..j`` are decoded: the common prefix of ``decode(ids[:j+1])`` and
the whole text (a token holding half of a UTF-8 character completes nothing until the
other half arrives). A segment goes on the first token with ``ends[j] >= char_end``;
an end past the last character goes on the last token. Not the tokenizer's offsets:
``tokenizer(text, return_offsets_mapping=True)`` re-tokenizes the text, and BPE need
not give back the tokens the policy sampled; decoding the sampled ids is exact by
construction. The cost is O(T^2) characters per response, small next to generation.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from alignkit.config.rl import PPOConfig
from alignkit.distributed import full_weights
from alignkit.engine.batch import ResponseBatch
from alignkit.engine.generation import SamplingConfig, sample
from alignkit.engine.layout import Layout
from alignkit.engine.logprobs import SequenceScorer, build_layout, sequence_logps
from alignkit.losses.rl import clip_rewards, kl_penalty, masked_mean
from alignkit.losses.rl_family import overlong_penalty
from alignkit.rewards.base import sum_segments

TokenSegment = tuple[int, float]  # (index of the response token that ends the segment, reward value)


# ---------------------------------------------------------------- policy and critic


@dataclass
class PolicyOutput:
    """Per-token outputs of :class:`ActorCritic`, ``[N, T]`` (N = B * K rows)."""

    logprobs: torch.Tensor  # [N, T] fp32 log pi(y_t | x, y_<t)
    mask: torch.Tensor  # [N, T] bool, True on response tokens
    entropy: torch.Tensor | None = None  # [N, T] entropy of pi(. | x, y_<t)
    values: torch.Tensor | None = None  # [N, T] V(s_t), the critic's value before token t


class ActorCritic(nn.Module):
    """The policy and its critic, evaluated on the sampled tokens in one forward.

    - shared critic (``value_head``, PPO's default): a :class:`~alignkit.models.heads.ScalarHead`
      reads the policy's own hidden states, those predicting each response token, so a
      value costs no extra forward pass; the value loss also trains the shared body.
    - separate critic (``critic``): a :class:`~alignkit.models.heads.ValueModel` (a copy
      of the policy's body plus a head) run on the same token layout.
    - neither (RLOO, GRPO): no values.

    One module, so that Accelerate's DDP wrapper sees one forward per backward.
    """

    def __init__(self, policy: nn.Module, value_head: nn.Module | None = None, critic: nn.Module | None = None,
                 pad_id: int = 0, share_prompt: bool = True, chunk_size: int = 1024):
        super().__init__()
        if value_head is not None and critic is not None:
            raise ValueError("give a shared value_head or a separate critic, not both")
        self.scorer = SequenceScorer(policy, chunk_size)
        self.value_head, self.critic = value_head, critic
        self.pad_id, self.share_prompt = pad_id, share_prompt

    @property
    def policy(self) -> nn.Module:
        return self.scorer.lm

    @property
    def has_critic(self) -> bool:
        return self.value_head is not None or self.critic is not None

    def forward(self, batch: ResponseBatch, values: bool = True, entropy: bool = True) -> PolicyOutput:
        values = values and self.has_critic
        shared = values and self.value_head is not None
        out = sequence_logps(self.scorer, batch, pad_id=self.pad_id, share_prompt=self.share_prompt,
                             per_token=True, entropy=entropy, hidden=shared)
        B, K, L = out.token_logps.shape

        def flat(x: torch.Tensor) -> torch.Tensor:  # (B, K, L, ...) -> (N, L, ...)
            return x.reshape(B * K, L, *x.shape[3:])

        result = PolicyOutput(flat(out.token_logps), flat(out.token_mask), flat(out.entropy) if entropy else None)
        if shared:
            result.values = self.value_head(flat(out.hidden))  # (N, L, H) -> (N, L)
        elif values:
            result.values = self._critic_values(batch, L)
        return result

    def _critic_values(self, batch: ResponseBatch, width: int) -> torch.Tensor:
        """The separate critic's ``V(s_t)`` ``[N, width]``, on the layout the policy uses."""
        share = self.share_prompt and self.scorer.supports_packing(self.pad_id)
        device = next(self.critic.parameters()).device
        layout = Layout(*(t.to(device) for t in vars(build_layout(batch, self.pad_id, share)).values()))
        values = self.critic(layout.input_ids, layout.attention_mask, layout.position_ids)  # (R, T_layout)
        picked = values[layout.pred_rows, layout.pred_cols]  # (n,) the state before each response token
        slot = layout.flat_index * width + layout.token_index
        return picked.new_zeros(batch.mask.numel() * width).index_copy(0, slot, picked).view(-1, width)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off (p = 0) everywhere, so that pi / pi_old is exactly 1 before the first update."""
    for sub in model.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
        if isinstance(getattr(sub, "attention_dropout", None), float):
            sub.attention_dropout = 0.0


def build_actor_critic(policy: nn.Module, critic: bool, cfg, pad_id: int) -> ActorCritic:
    """Policy + critic per ``cfg.ppo.value_model`` (``critic=False``: none, for RLOO and GRPO)."""
    import copy

    from alignkit.models.heads import ScalarHead, ValueModel, backbone_of

    head = value_model = None
    if critic:
        head = ScalarHead(policy.config.hidden_size, init=cfg.ppo.value_head_init)
        if cfg.ppo.value_model == "separate":
            value_model, head = ValueModel(copy.deepcopy(backbone_of(policy)), head), None
    return ActorCritic(policy, head, value_model, pad_id, cfg.engine.share_prompt, cfg.engine.chunk_size)


@torch.no_grad()
def reference_logprobs(reference, batch: ResponseBatch) -> torch.Tensor:
    """Per-token log-probs ``[N, T]`` under the reference from :func:`alignkit.train.build.build_reference`.

    A :class:`~alignkit.models.reference.FrozenReference` runs its own copy; an
    :class:`~alignkit.models.reference.AdapterReference` runs the policy itself with its
    LoRA adapter switched off (``disable_adapter()``): no second copy of the base weights.
    """
    from alignkit.models.reference import AdapterReference, FrozenReference, _find_peft

    if isinstance(reference, AdapterReference):
        scorer, context = reference.policy_scorer, _find_peft(reference.policy_scorer).disable_adapter()
    elif isinstance(reference, FrozenReference):
        scorer, context = reference.scorer, nullcontext()
    else:
        raise TypeError(f"on-policy RL needs per-token reference log-probs; {type(reference).__name__} has none")
    with context:
        out = sequence_logps(scorer, batch, pad_id=reference.pad_id, share_prompt=reference.share_prompt,
                             per_token=True)
    B, K, L = out.token_logps.shape
    return out.token_logps.reshape(B * K, L)


# ---------------------------------------------------------------- dense rewards: characters -> tokens


def token_char_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """``ends[j]``: characters of ``decode(ids)`` fixed once tokens ``0..j`` are decoded (non-decreasing)."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    ends, best = [], 0
    for j in range(len(ids)):
        prefix = tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=True)
        best = max(best, len(os.path.commonprefix([prefix, text])))
        ends.append(best)
    return ends


def segments_to_tokens(tokenizer, ids: Sequence[int], segments: Sequence[tuple[int, float]]) -> list[TokenSegment]:
    """Map ``(char_end, value)`` segments of a decoded response to ``(token_index, value)``."""
    ends = token_char_ends(tokenizer, ids)
    return [(min(bisect_left(ends, end), len(ids) - 1), float(value)) for end, value in segments]


# ---------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """B prompts x K samples, their rewards, and the per-token quantities of the update, ``[N, T]``."""

    prompt_ids: list[list[int]]  # B prompts
    response_ids: list[list[list[int]]]  # B x K samples (EOS kept when the sample ended)
    prompts: list[str]  # N decoded prompts (each repeated K times)
    texts: list[str]  # N decoded responses, as the reward saw them
    mask: torch.Tensor  # [N, T] bool
    logprobs: torch.Tensor  # [N, T] log pi_old of the sampled tokens
    ref_logprobs: torch.Tensor  # [N, T] log pi_ref of the sampled tokens
    entropy: torch.Tensor  # [N, T] policy entropy at each position
    values: torch.Tensor | None  # [N, T] V_old(s_t), None without a critic
    scores: torch.Tensor  # [N] task reward (a dense reward: the sum of its segments)
    segments: list[list[TokenSegment]] | None  # dense rewards: (token index, value) per row
    ended: torch.Tensor  # [N] bool: the sample ends with EOS
    metrics: dict[str, float]  # generation speed
    max_new_tokens: int = 0  # the generation budget the samples had
    macro_ids: torch.Tensor | None = None  # [N, T] MA-RLHF: each token's macro action (set by the algorithm)
    is_weights: torch.Tensor | None = None  # [N, T] truncated importance weights (ppo.tis_cap, another sampler)
    sampler_logprobs: torch.Tensor | None = None  # [N, T] the sampling engine's log-probs, where it gives them

    @property
    def num_samples(self) -> int:
        return len(self.response_ids[0])

    def rows(self, prompts: torch.Tensor, samples: slice = slice(None)) -> torch.Tensor:
        """Row indices ``[len(prompts) * k]`` of the samples of ``prompts`` (prompt indices), of each
        prompt's samples ``samples`` (all K by default), prompt-major."""
        K = self.num_samples
        return (prompts[:, None] * K + torch.arange(K)[samples]).flatten()

    def batch(self, prompts: torch.Tensor | None = None, samples: slice = slice(None)) -> ResponseBatch:
        """The engine's view of the samples ``samples`` of ``prompts`` (all samples of all prompts by default)."""
        idx = range(len(self.prompt_ids)) if prompts is None else prompts.tolist()
        return response_batch([self.prompt_ids[b] for b in idx], [self.response_ids[b][samples] for b in idx])


def response_batch(prompt_ids: list[list[int]], response_ids: list[list[list[int]]]) -> ResponseBatch:
    B, K = len(prompt_ids), len(response_ids[0])
    return ResponseBatch(prompt_ids, response_ids, torch.zeros(B, K), torch.ones(B, K, dtype=torch.bool))


def eos_ids(model: nn.Module, tokenizer) -> set[int]:
    """The tokens that end a sample: the tokenizer's EOS and the generation config's."""
    from alignkit.engine.generation import _as_list
    from alignkit.engine.logprobs import unwrap_causal_lm

    return {tokenizer.eos_token_id, *_as_list(getattr(unwrap_causal_lm(model).generation_config, "eos_token_id", None))}


@torch.no_grad()
def collect_rollout(model: nn.Module, reference, reward, tokenizer, prompt_ids: list[list[int]],
                    sampling: SamplingConfig, values: bool = True, sampler=sample,
                    prompt_texts: list[str] | None = None) -> Rollout:
    """Sample, score and evaluate K responses per prompt with ``model`` (an :class:`ActorCritic`).

    The reward reads each prompt as ``prompt_texts`` gives it (the rows' text, as ``alignkit eval`` scores
    it); a prompt without one (``""``, or no list) is read as its decoded ids, which are truncated to
    ``data.max_prompt_length`` and carry the chat template."""
    inner = model.module if hasattr(model, "module") else model  # under DDP
    with full_weights(model):  # FSDP: the policy's embeddings and head are the root unit's
        samples = sampler(inner.policy, tokenizer, prompt_ids, sampling)
    responses = [[r or [tokenizer.eos_token_id] for r in rs] for rs in samples.response_ids]
    batch = response_batch(samples.prompt_ids, responses)
    if not values and _has_policy_logprobs(samples) and _full_precision(inner):  # the decode's: no second forward
        out = _decoded_policy_output(samples, [r for rs in responses for r in rs])
    else:
        out = model(batch, values=values, entropy=True)
    # no reference (KL coefficient 0): log pi_ref := log pi, so every KL term is exactly 0
    ref = out.logprobs.clone() if reference is None else reference_logprobs(reference, batch).to(out.logprobs.device)

    K = len(responses[0])
    texts_in = prompt_texts or [""] * len(prompt_ids)
    prompts = [t or tokenizer.decode(p, skip_special_tokens=True) for p, t in zip(prompt_ids, texts_in) for _ in range(K)]
    texts = [t for ts in samples.texts for t in ts]
    flat = [r for rs in responses for r in rs]
    segments, details = None, {}
    if reward.dense:
        char_segments = reward.score_segments(prompts, texts)
        segments = [segments_to_tokens(tokenizer, ids, segs) for ids, segs in zip(flat, char_segments)]
        scores = sum_segments(char_segments)
    else:
        scores, details = reward.score_with_details(prompts, texts)  # details: e.g. each group's reward (min)
        scores = scores.float()
    stop = eos_ids(inner.policy, tokenizer)
    device = out.logprobs.device
    return Rollout(
        prompt_ids=samples.prompt_ids, response_ids=responses, prompts=prompts, texts=texts,
        mask=out.mask, logprobs=out.logprobs, ref_logprobs=ref, entropy=out.entropy, values=out.values,
        scores=scores.to(device), segments=segments,
        ended=torch.tensor([r[-1] in stop for r in flat], device=device),
        metrics={**samples.metrics, **{f"reward/{k}": float(v.float().mean()) for k, v in details.items()}},
        max_new_tokens=sampling.max_new_tokens,
        sampler_logprobs=None if samples.logprobs is None else _sampler_logprobs(samples.logprobs, out.logprobs),
    )


def _has_policy_logprobs(samples) -> bool:
    """The sampler was the policy itself and kept its log-probs (:func:`alignkit.engine.generation.decode`),
    and no response was empty (an empty one is scored as a lone EOS the decode never produced)."""
    return samples.policy_logprobs is not None and all(r for rs in samples.response_ids for r in rs)


def _full_precision(model: nn.Module) -> bool:
    """fp32 weights and no autocast: the decode's log-probs then equal the scoring forward's to ~1e-6. In
    bf16 / fp16 the cached decode and the one-pass forward differ by ~1e-2 (the rollout/training mismatch
    of another engine), so pi_old is scored again and the first ratio stays exactly 1."""
    weight = next(model.parameters())
    return weight.dtype == torch.float32 and not torch.is_autocast_enabled(weight.device.type)


def _decoded_policy_output(samples, responses: list[list[int]]) -> PolicyOutput:
    """The rollout's ``log pi_old`` and entropies ``[N, T]`` from the decode loop.

    They are what the scoring forward would give: the same model, unchanged since it sampled,
    the same logits (the decode's, at temperature 1 like the losses), up to the float error
    of cached decoding against one full forward (``tests/train/test_rollout_reuse.py``).
    """
    logprobs, entropy = samples.policy_logprobs, samples.policy_entropy
    lengths = torch.tensor([len(r) for r in responses], device=logprobs.device)
    T = int(lengths.max())
    mask = torch.arange(T, device=logprobs.device) < lengths[:, None]  # (N, T)
    return PolicyOutput(torch.where(mask, logprobs[:, :T], 0.0), mask, torch.where(mask, entropy[:, :T], 0.0))


def _sampler_logprobs(logprobs: list[list[list[float]]], training: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` the sampler's log-probs; where it gave none (an EOS added back), the trainer's own."""
    out = training.clone()
    for i, values in enumerate(lp for rows in logprobs for lp in rows):
        n = min(len(values), out.shape[1])
        out[i, :n] = torch.tensor(values[:n], dtype=out.dtype)
    return out


@torch.no_grad()
def evaluate_policy(model: nn.Module, reference, reward, tokenizer, prompt_ids: list[list[int]],
                    sampling: SamplingConfig, prompt_texts: list[str] | None = None) -> dict[str, float]:
    """Fresh samples' mean ``reward``, ``objective/kl`` (KL(pi || pi_ref) per response, k1 summed over
    tokens), per-token ``entropy`` and ``completions/mean_length`` (TRL's names)."""
    r = collect_rollout(model, reference, reward, tokenizer, prompt_ids, sampling, values=False,
                        prompt_texts=prompt_texts)
    kl = kl_penalty(r.logprobs, r.ref_logprobs, r.mask).sum(1)  # (N,) log pi(y|x) - log pi_ref(y|x)
    metrics = {
        "reward": float(r.scores.mean()),
        "entropy": float(masked_mean(r.entropy, r.mask)),
        "completions/mean_length": float(r.mask.sum(1).float().mean()),
    }
    if reference is not None:  # none at kl_coef 0: the KL is not measured
        metrics["objective/kl"] = float(kl.mean())
    return metrics


# ---------------------------------------------------------------- task rewards


class RunningMoments:
    """Running mean and (population) std of every score seen, merged batch by batch (Chan et al. 1979)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        if n == 0:
            return
        batch_mean, batch_var = float(x.mean()), float(x.var(unbiased=False))
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        return max(math.sqrt(self.var), 1e-6)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], int(state["count"])


def task_rewards(rollout: Rollout, cfg: PPOConfig, moments: RunningMoments) -> tuple[torch.Tensor, list[list[TokenSegment]] | None]:
    """Processed scores ``[N]`` and, for a dense reward, processed ``(token, value)`` segments.

    A score becomes ``clip((score - mean) / std) - penalty``, the moments being running
    ones (updated by the caller); the penalty is ``missing_eos_penalty`` for a sample
    without EOS plus, with ``overlong_buffer``, DAPO's length penalty. A dense reward scales and clips each segment and puts
    ``-mean / std - penalty`` on the last token; its score is the sum.
    """
    shift = moments.mean if cfg.center_rewards else 0.0
    scale = 1.0 / moments.std if cfg.scale_rewards else 1.0
    penalty = cfg.missing_eos_penalty * (~rollout.ended).float()  # (N,)
    if cfg.overlong_buffer > 0:  # DAPO's soft overlong punishment
        penalty = penalty - overlong_penalty(rollout.mask.sum(1), rollout.max_new_tokens, cfg.overlong_buffer,
                                             cfg.overlong_penalty)
    if rollout.segments is None:
        return clip_rewards((rollout.scores - shift) * scale, cfg.reward_clip) - penalty, None
    c = cfg.reward_clip if cfg.reward_clip is not None else math.inf
    last = rollout.mask.sum(1) - 1
    segments = [
        [(t, min(max(v * scale, -c), c)) for t, v in segs] + [(int(last[i]), -shift * scale - float(penalty[i]))]
        for i, segs in enumerate(rollout.segments)
    ]
    return sum_segments(segments).to(rollout.scores.device), segments
