"""``method: span_reward_model``: a fine-grained reward model trained on span feedback.

Fine-Grained RLHF (Wu et al. 2023, sec. 4.1): the answers with span feedback are cut into
segments (``span_reward_model.level``), each labelled error / no error for the model's
``categories`` (:mod:`alignkit.data.spans`), and a token classifier
(:mod:`alignkit.models.span_model`) learns the label at each segment's last token with
cross-entropy (:func:`~alignkit.losses.reward.segment_error_loss`), an error segment weighing
``error_weight`` and a correct one 1. The shared loop runs it (:func:`~alignkit.train.loop.train_loop`).

Decision threshold: with ``validation_size`` > 0, that many training questions are set aside
(never trained on), and at each evaluation the threshold on p(error) that makes the most
accurate predictions on their segments is chosen
(:func:`~alignkit.eval.metrics.accuracy_threshold`) and saved with the model; the held-out
metrics use it. The held-out questions never choose anything.

Held-out evaluation as the paper reports it: the prompts (questions) are split so that no
question of the held-out set is seen in training (``data.eval_size`` questions, or the
``data.eval`` file), and on their segments the model's accuracy and error-class
precision / recall / F1 are reported next to the majority-class baseline (the label most
frequent among the training segments, predicted everywhere).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.spans import SpanExample
from alignkit.train.methods import MethodSpec, register_method

log = logging.getLogger("alignkit")


class SpanRewardModelMethod:
    """The loss and held-out metrics of a :class:`~alignkit.models.span_model.SpanRewardModel`."""

    def __init__(self, tokenizer, majority: int, error_weight: float = 1.0,
                 validation: Sequence[SpanExample] = ()):
        self.tokenizer, self.majority = tokenizer, majority
        self.error_weight, self.validation = error_weight, list(validation)

    def units(self, examples: Sequence[SpanExample]) -> float:
        return float(sum(len(ex.labelled) for ex in examples))

    def predict(self, module, examples: Sequence[SpanExample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[M, 2]`` and labels ``[M]`` of the labelled segments that fit in the model."""
        from alignkit.models.span_model import segment_logits

        model = module.module if hasattr(module, "module") else module  # under DDP
        ends = [[ex.segments[j][1] for j in ex.labelled] for ex in examples]
        logits, index = segment_logits(model, self.tokenizer, [ex.prompt for ex in examples],
                                       [ex.response for ex in examples], ends)
        labels = [examples[i].labels[examples[i].labelled[j]] for i, j in index]
        return logits, torch.tensor(labels, dtype=torch.long, device=logits.device)

    def loss(self, module, examples: Sequence[SpanExample]):
        from alignkit.losses.reward import segment_error_loss

        logits, labels = self.predict(module, examples)
        losses = segment_error_loss(logits, labels, self.error_weight)  # (M,)
        accuracy = (logits.argmax(-1) == labels).float().mean() if len(labels) else torch.tensor(0.0)
        return losses.sum(), {"loss": float(losses.detach().mean()), "accuracy": float(accuracy)}

    def _scored(self, module, examples: Sequence[SpanExample], batch_size: int):
        """p(error) ``[M]``, labels ``[M]`` and the summed loss over ``examples``' labelled segments."""
        from alignkit.losses.reward import segment_error_loss

        probs, gold, loss_sum = [], [], 0.0
        for start in range(0, len(examples), batch_size):
            logits, labels = self.predict(module, examples[start : start + batch_size])
            loss_sum += float(segment_error_loss(logits, labels, self.error_weight).sum())
            probs.append(logits.float().softmax(-1)[:, 1])
            gold.append(labels)
        return torch.cat(probs).tolist() if probs else [], torch.cat(gold).tolist() if gold else [], loss_sum

    @torch.no_grad()
    def evaluate(self, module, examples: Sequence[SpanExample], batch_size: int) -> dict[str, float]:
        """Held-out metrics beside the majority class; first, the threshold from the validation questions."""
        from alignkit.eval.metrics import accuracy_threshold, error_class_metrics

        module.eval()
        model = module.module if hasattr(module, "module") else module
        out: dict[str, float] = {}
        if self.validation:
            p_val, y_val, _ = self._scored(module, self.validation, batch_size)
            model.info.threshold = accuracy_threshold(p_val, y_val)
            out.update({f"validation_{k}": v for k, v in
                        error_class_metrics([int(p > model.info.threshold) for p in p_val], y_val).items()})
        out["threshold"] = model.info.threshold
        if not examples:
            return out
        probs, gold, loss_sum = self._scored(module, examples, batch_size)
        out.update(error_class_metrics([int(p > model.info.threshold) for p in probs], gold))
        baseline = error_class_metrics([self.majority] * len(gold), gold)
        out.update({f"majority_{k}": v for k, v in baseline.items()})
        out.update(loss=loss_sum / max(len(gold), 1), segments=float(len(gold)),
                   error_share=sum(gold) / max(len(gold), 1))
        return out


def majority_label(examples: Sequence[SpanExample]) -> int:
    """The most frequent label of the labelled segments (0 on a tie: "no error")."""
    counts = Counter(ex.labels[j] for ex in examples for j in ex.labelled)
    return 1 if counts[1] > counts[0] else 0


def load_span_data(cfg) -> tuple[list[SpanExample], list[SpanExample], list[SpanExample]]:
    """Training, validation and held-out span examples: three disjoint sets of questions (the held-out
    ones are never trained on; the validation ones, ``validation_size`` of the training questions,
    only choose the decision threshold)."""
    from alignkit.data.examples import load_examples
    from alignkit.data.pipeline import resolve_data_path
    from alignkit.data.spans import span_examples, split_by_prompt
    from alignkit.errors import ConfigError

    common = dict(format=cfg.data.format, skip_bad_rows=cfg.data.skip_bad_rows, log=log.warning)
    train = load_examples(resolve_data_path(cfg.data.train), split=cfg.data.split,
                          max_rows=cfg.data.max_rows or None, **common)
    if cfg.data.eval:
        held_out = load_examples(resolve_data_path(cfg.data.eval), split=cfg.data.eval_split, **common)
    elif cfg.data.eval_size > 0:
        split_seed = cfg.train.seed if cfg.data.split_seed < 0 else cfg.data.split_seed
        train, held_out = split_by_prompt(train, cfg.data.eval_size, split_seed)
    else:
        held_out = []
    sr = cfg.span_reward_model
    validation = []
    if sr.validation_size > 0:
        train, validation = split_by_prompt(train, sr.validation_size, cfg.train.seed + 1)
    settings = dict(level=sr.level, categories=sr.categories, min_span_words=sr.min_span_words,
                    ignore_other_errors=sr.ignore_other_errors)
    train_spans, held_spans = span_examples(train, **settings), span_examples(held_out, **settings)
    if not train_spans:
        raise ConfigError(f"data.train: {cfg.data.train} has no answers with span feedback "
                          "(formats qa_feedback and span_feedback carry it; see docs/fine_grained.md)")
    return train_spans, span_examples(validation, **settings), held_spans


def train_span_reward_model(cfg) -> Path:
    from alignkit.models.span_model import SpanModelInfo, load_span_reward_model, save_span_reward_model
    from alignkit.train.accelerator import make_accelerator
    from alignkit.train.loop import train_loop

    sr = cfg.span_reward_model
    accelerator = make_accelerator(cfg.train)  # seeds every process first: the new head starts the same
    train, validation, held_out = load_span_data(cfg)
    info = SpanModelInfo(level=sr.level, categories=list(sr.categories), max_length=sr.max_length,
                         context_lines=sr.context_lines,
                         error_reward=sr.error_reward, ok_reward=sr.ok_reward)
    model, tokenizer = load_span_reward_model(cfg.model.name_or_path, info, init_from_base=True)
    model.info = info  # a folder saved earlier is retrained with this run's settings
    majority = majority_label(train)
    log.info("span reward model: %d training answers (%d segments), %d validation and %d held-out answers; "
             "majority label %d", len(train), sum(len(ex.labelled) for ex in train), len(validation), len(held_out),
             majority)
    method = SpanRewardModelMethod(tokenizer, majority, sr.error_weight, validation)
    evaluate = (lambda m: method.evaluate(m, held_out, cfg.train.batch_size)) if held_out or validation else None

    def on_save(module, out_dir: Path, state_dict=None) -> None:
        save_span_reward_model(module, tokenizer, out_dir, state_dict=state_dict)

    train_loop(cfg.train, method, model, train, evaluate=evaluate, on_save=on_save, desc="span reward model",
               accelerator=accelerator)
    return Path(cfg.train.output_dir)


def check_config(cfg) -> None:
    """Checked before any data is read (``run_train`` runs a method's check first)."""
    from alignkit.errors import ConfigError

    if not cfg.span_reward_model.categories:
        raise ConfigError("span_reward_model.categories: required, e.g. [Irrelevant, Redundant, Incoherent]")


register_method(MethodSpec("span_reward_model", "reward_model", train_span_reward_model, data="spans",
                           check=check_config, sections=("span_reward_model",)))
