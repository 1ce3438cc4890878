"""Every config key with its type, default and one-line doc, from one source: the comment that
follows each dataclass field (``batch_size: int = 8  # prompts per device per micro-batch``).

The same rows make ``alignkit train --help``, ``alignkit config show METHOD`` and
``docs/config.md``; :func:`did_you_mean` turns an unknown key, TRL's names included
(``beta``, ``per_device_train_batch_size``, ...), into the key that exists.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import tokenize
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Key:
    name: str  # dotted: train.batch_size, rewards[].kind
    type: str
    default: str
    doc: str


# TRL's (and transformers.TrainingArguments') names -> the alignkit key that means the same.
TRL_NAMES: dict[str, str] = {
    "beta": "loss.beta",
    "label_smoothing": "loss.label_smoothing",
    "loss_type": "method",
    "learning_rate": "train.learning_rate",
    "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "num_train_epochs": "train.num_epochs",
    "max_steps": "train.max_steps",
    "warmup_steps": "train.warmup_steps",
    "lr_scheduler_type": "train.schedule",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "output_dir": "train.output_dir",
    "report_to": "train.tracker",
    "logging_steps": "train.log_every",
    "eval_steps": "train.eval_every",
    "save_steps": "train.save_every",
    "save_total_limit": "train.keep_checkpoints",
    "resume_from_checkpoint": "train.resume",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "bf16": "train.mixed_precision",
    "fp16": "train.mixed_precision",
    "disable_tqdm": "train.progress",
    "max_prompt_length": "data.max_prompt_length",
    "max_length": "data.max_length",
    "max_completion_length": "data.max_length",
    "truncation_mode": "data.truncation",
    "dataset_name": "data.train",
    "dataset_train_split": "data.split",
    "dataset_test_split": "data.eval_split",
    "model_name_or_path": "model.name_or_path",
    "tokenizer_name_or_path": "model.tokenizer",
    "torch_dtype": "model.dtype",
    "dtype": "model.dtype",
    "trust_remote_code": "model.trust_remote_code",
    "use_peft": "model.lora.enabled",
    "lora_r": "model.lora.r",
    "lora_alpha": "model.lora.alpha",
    "lora_dropout": "model.lora.dropout",
    "lora_target_modules": "model.lora.target_modules",
    "ref_model": "reference.path",
    "precompute_ref_log_probs": "reference.mode",
    "num_generations": "sampling.num_samples",
    "temperature": "sampling.temperature",
    "kl_coef": "ppo.kl_coef",
    "num_ppo_epochs": "ppo.num_ppo_epochs",
    "num_mini_batches": "ppo.num_minibatches",
}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: doc}``: the comments on a field's lines, and on comment-only lines right below it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    source = inspect.cleandoc("\n" + source) if source.startswith((" ", "\t")) else source
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = body[i + 1].lineno if i + 1 < len(body) else max(comments, default=0) + 1
        lines = [comments[n] for n in range(node.lineno, end) if n in comments]
        docs[node.target.id] = " ".join(lines)
    return docs


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "null"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def keys(cls: type, prefix: str = "") -> list[Key]:
    """Every leaf key of ``cls``: nested sections are walked, a list of sections as ``name[].field``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Key] = []
    for f in dataclasses.fields(cls):
        name, tp = f"{prefix}{f.name}", hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list and typing.get_args(tp) else None
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{name}.")
        elif inner is not None and dataclasses.is_dataclass(inner):
            out += keys(inner, f"{name}[].")
        else:
            default = _default(f)
            shown = "''" if default == "" else ("{}" if default == {} else str(default))
            out.append(Key(name, _type_name(tp), shown, docs.get(f.name, "")))
    return out


def section_of(key: str) -> str:
    return key.split(".", 1)[0].split("[", 1)[0]


def format_keys(rows: list[Key], width: int = 100) -> str:
    """Aligned ``key  type = default  doc`` lines, grouped by section."""
    lines, section = [], None
    pad = max((len(r.name) for r in rows), default=0)
    for r in rows:
        if section_of(r.name) != section:
            section = section_of(r.name)
            lines.append(f"{section}:" if lines == [] else f"\n{section}:")
        lines.append(f"  {r.name:<{pad}}  {r.type} = {r.default}" + (f"\n  {'':<{pad}}  {r.doc}" if r.doc else ""))
    return "\n".join(lines)


def markdown(rows: list[Key]) -> str:
    """One table per section: key, type, default, doc."""
    out, section = [], None
    for r in rows:
        if section_of(r.name) != section:
            section = section_of(r.name)
            out += ["", f"### `{section}`", "", "| key | type | default | what it does |", "|---|---|---|---|"]
        cells = [f"`{r.name}`", r.type.replace("|", "\\|"), f"`{r.default}`", r.doc.replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out).lstrip("\n") + "\n"


def did_you_mean(key: str, full: str, siblings: list[str], root: type | None = None) -> str:
    """A hint for an unknown ``key`` (at dotted path ``full``): TRL's name for an alignkit key, a close
    name in the same section, or a key of the same (or a close) name in another section of ``root``."""
    bare = key.replace("-", "_")
    if root is not None:
        all_keys = [k.name for k in keys(root)]
        if bare in TRL_NAMES and (TRL_NAMES[bare] in all_keys or section_of(TRL_NAMES[bare]) in all_keys):
            return f" (did you mean `{TRL_NAMES[bare]}`? TRL's `{bare}` is alignkit's `{TRL_NAMES[bare]}`)"
    close = difflib.get_close_matches(bare, siblings, n=1)
    if close:
        parent = full.rsplit(".", 1)[0] + "." if "." in full else ""
        return f" (did you mean `{parent}{close[0]}`?)"
    if root is not None:
        leaves: dict[str, str] = {}
        for k in sorted(all_keys, key=lambda k: section_of(k) != "train"):  # train's keys first
            if "[]" not in k:
                leaves.setdefault(k.rsplit(".", 1)[-1], k)
        match = bare if bare in leaves else next(iter(difflib.get_close_matches(bare, list(leaves), n=1)), None)
        if match:
            return f" (did you mean `{leaves[match]}`?)"
    return ""
