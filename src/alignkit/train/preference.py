"""One trainer for every policy loss in ``alignkit.losses.LOSSES``: each is a preference method.

The engine gives the policy's ``[B, K]`` log-probs, the reference (when the
method needs one) gives its own, and the registered loss turns them into one loss
per prompt. Adding a method is adding a loss function; nothing here changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.schema import TokenizedExample
from alignkit.engine import collate, sequence_logps
from alignkit.errors import ConfigError
from alignkit.losses import LOSSES, RankedBatch, check_hyperparameters, get_loss
from alignkit.train.methods import MethodSpec, method_family


class PreferenceMethod:
    def __init__(self, name: str, hyperparameters: dict, pad_id: int, reference=None, share_prompt: bool = True):
        self.name, self.hp = name, dict(hyperparameters)
        self.loss_fn = get_loss(name)
        self.pad_id, self.reference, self.share_prompt = pad_id, reference, share_prompt
        if self.loss_fn.needs_reference and reference is None:
            raise ValueError(f"method {name!r} needs a reference model")

    def units(self, examples: Sequence[TokenizedExample]) -> float:
        return float(len(examples))

    def ranked_batch(self, module, examples: Sequence[TokenizedExample]) -> RankedBatch:
        batch = collate(examples)
        out = sequence_logps(module, batch, pad_id=self.pad_id, share_prompt=self.share_prompt)
        device = out.logps.device
        ref = self.reference.logps(batch).to(device) if self.loss_fn.needs_reference else None
        desirable = batch.desirable.to(device) if batch.desirable is not None else None
        return RankedBatch(out.logps, ref, out.lengths, batch.scores.to(device), out.mask, desirable)

    def loss(self, module, examples: Sequence[TokenizedExample]) -> tuple[torch.Tensor, dict[str, float]]:
        losses, metrics = self.loss_fn(self.ranked_batch(module, examples), **self.hp)
        return losses.sum(), {"loss": float(losses.detach().mean()), **{k: float(v) for k, v in metrics.items()}}


def train_preference(cfg) -> Path:
    """Train the policy with the loss named by ``cfg.method`` and its hyper-parameters ``cfg.loss``."""
    from alignkit.engine import SequenceScorer
    from alignkit.train.accelerator import make_accelerator
    from alignkit.train.build import build_reference, policy_and_data, policy_saver
    from alignkit.train.loop import train_loop

    model, tokenizer, train, held_out = policy_and_data(cfg)
    loss_fn = get_loss(cfg.method)
    if loss_fn.data != "unpaired":
        check_preferences(cfg, train)
    accelerator = make_accelerator(cfg.train)
    scorer = SequenceScorer(model, cfg.engine.chunk_size, compile=cfg.engine.compile)
    reference = None
    if loss_fn.needs_reference:
        reference = build_reference(cfg, model, scorer.to(accelerator.device), tokenizer.pad_token_id,
                                    train + held_out)
        reference.to(accelerator.device)
    method = PreferenceMethod(cfg.method, cfg.loss, tokenizer.pad_token_id, reference, cfg.engine.share_prompt)
    train_loop(cfg.train, method, scorer, train, accelerator=accelerator, eval_examples=held_out,
               on_save=policy_saver(tokenizer), desc=cfg.method)
    return Path(cfg.train.output_dir)


def check_preferences(cfg, examples) -> None:
    """Rows with differing scores must exist: a preference loss learns nothing from SFT data."""
    if not any(ex.scores is not None and len(set(ex.scores)) > 1 for ex in examples):
        raise ConfigError(
            f"data.train: method {cfg.method!r} needs preferences (pairwise or ranked rows with differing scores), "
            f"but {cfg.data.train} has none; use method: sft for SFT data"
        )


def _check_hyperparameters(cfg) -> None:
    check_hyperparameters(cfg.method, cfg.loss)


@method_family
def preference_methods() -> dict[str, MethodSpec]:
    """Every policy loss of ``LOSSES`` (not the reward model's) is a method of its own name."""
    return {
        name: MethodSpec(name, "preference", train_preference, data=fn.data, uses=name,
                         needs_reference=fn.needs_reference, implicit_reward="ratio" if fn.needs_reference else "logp",
                         check=_check_hyperparameters)
        for name, fn in LOSSES.items() if fn.trains == "policy"
    }
