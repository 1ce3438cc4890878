"""``method: preference_model``: a pairwise preference model P(y > y' | x) trained on comparisons.

The cross-encoder of :mod:`alignkit.models.preference_model` (MiniLM by default, any encoder
or causal LM body with a scalar head on every token) reads the prompt and both responses and
compares each response's mean token score; its log-odds ``g`` is antisymmetric by construction. Pairwise
rows give one ordered pair (chosen, rejected); ranked rows (K responses with scores) give
every pair with a strict preference, each row weighing the same
(:func:`~alignkit.losses.reward.preference_model_loss`). It reads the ``reward_model:``
section for ``max_length`` (``kind``, ``loss`` and ``center_examples`` do not apply).

Held-out accuracy is reported as for reward models (``eval/accuracy``: a pair counts 1 when
``g(x, y_w, y_l) > 0``, 1/2 on a tie). Use the trained model as a judge with the reward kind
``preference_model`` (:class:`alignkit.rewards.preference.PreferenceJudge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.schema import Example
from alignkit.errors import ConfigError
from alignkit.train.methods import MethodSpec, register_method


def ordered_pairs(examples: Sequence[Example]) -> tuple[list[str], list[str], list[str], list[float]]:
    """(prompts, better, worse, weights) over every strictly ordered pair of every row; a row's
    weights sum to 1."""
    from alignkit.rewards.base import as_text

    prompts, better, worse, weights = [], [], [], []
    for ex in examples:
        pairs = [(i, j) for i in range(len(ex.responses)) for j in range(len(ex.responses))
                 if ex.scores[i] > ex.scores[j]]
        for i, j in pairs:
            prompts.append(as_text(ex.prompt))
            better.append(as_text(ex.responses[i]))
            worse.append(as_text(ex.responses[j]))
            weights.append(1.0 / len(pairs))
    return prompts, better, worse, weights


class PreferenceModelMethod:
    """The loop's method: the summed per-row mean pair loss of a micro-batch of rows."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def units(self, examples: Sequence[Example]) -> float:
        return float(len(examples))

    def logits(self, module, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        from alignkit.models.preference_model import preference_logits

        prompts, better, worse, weights = ordered_pairs(examples)
        g = preference_logits(module, self.tokenizer, prompts, better, worse, self.max_length)  # (M,)
        return g, torch.tensor(weights, device=g.device)

    def loss(self, module, examples: Sequence[Example]):
        from alignkit.losses.reward import preference_model_loss

        g, weights = self.logits(module, examples)
        per_pair = preference_model_loss(g, weights)  # (M,)
        rows = weights.sum().clamp(min=1e-12)
        return per_pair.sum(), {"loss": float(per_pair.detach().sum() / rows),
                                "accuracy": float(((g.detach() > 0).float() * weights).sum() / rows),
                                "margin": float((g.detach() * weights).sum() / rows)}

    @torch.no_grad()
    def evaluate(self, module, examples: Sequence[Example], batch_size: int) -> dict[str, float]:
        """Held-out pair accuracy (a tie counts 1/2), mean pair loss and the number of pairs."""
        module.eval()
        correct, loss, pairs = 0.0, 0.0, 0
        for start in range(0, len(examples), batch_size):
            g, _ = self.logits(module, examples[start : start + batch_size])
            correct += float((g > 0).sum() + 0.5 * (g == 0).sum())
            loss += float(torch.nn.functional.softplus(-g).sum())
            pairs += len(g)
        return {"accuracy": correct / max(pairs, 1), "loss": loss / max(pairs, 1), "pairs": pairs}


def train_preference_model(cfg) -> Path:
    from alignkit.models.preference_model import MODEL_KIND, save_preference_model
    from alignkit.train.loop import train_loop
    from alignkit.train.reward_model import scorer_and_preferences

    rm_cfg = cfg.reward_model
    accelerator, model, tokenizer, train, held_out = scorer_and_preferences(cfg, kind=MODEL_KIND)
    held_out = [ex for ex in held_out if len(set(ex.scores)) > 1]
    method = PreferenceModelMethod(tokenizer, rm_cfg.max_length)
    evaluate = (lambda m: method.evaluate(m, held_out, cfg.train.batch_size)) if held_out else None

    def on_save(module, out_dir: Path, state_dict=None) -> None:
        save_preference_model(module, tokenizer, out_dir, state_dict=state_dict)

    train_loop(cfg.train, method, model, train, evaluate=evaluate, on_save=on_save, desc="preference model",
               accelerator=accelerator)
    return Path(cfg.train.output_dir)


def check_config(cfg) -> None:
    if cfg.reward_model.kind == "classifier":
        raise ConfigError("reward_model.kind: a preference model reads a score at every token of each response "
                          "(the model's body with a scalar head), not a sequence classifier's one score; "
                          "remove reward_model.kind")
    if cfg.loss:
        raise ConfigError("loss: method 'preference_model' has one loss (-log sigmoid of the antisymmetric "
                          "log-odds) and no hyper-parameters; remove the loss section")


register_method(MethodSpec("preference_model", "reward_model", train_preference_model, data="ranked",
                           check=check_config, sections=("reward_model",),
                           paper="Munos et al. 2023 (NLHF preference model, arXiv 2312.00886); "
                                 "Jiang et al. 2023 (PairRM, arXiv 2306.02561)"))
