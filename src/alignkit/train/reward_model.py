"""``method: reward_model``: a scalar reward trained on human comparisons.

InstructGPT's recipe: the K responses of a prompt go through the reward model in
the same batch and the K-wise loss averages all K-choose-2 pairs (pairwise data
is K=2, where it is the Bradley-Terry loss). After training the mean reward over
a reference set (the training responses) is stored, so that a policy starting
from those responses scores about 0 when the model is used as a reward (RAFT,
Gao et al.'s scaling laws).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alignkit.data.schema import Example
from alignkit.distributed import barrier, is_main
from alignkit.train.methods import MethodSpec, register_method


class RewardModelMethod:
    def __init__(self, tokenizer, loss_name: str, hyperparameters: dict, max_length: int):
        from alignkit.losses import get_loss

        self.tokenizer, self.loss_fn, self.hp, self.max_length = tokenizer, get_loss(loss_name), hyperparameters, max_length

    def units(self, examples: Sequence[Example]) -> float:
        return float(len(examples))

    def rewards(self, module, examples: Sequence[Example]):
        """Rewards ``[B, K]`` (0 where masked), scores and mask."""
        from alignkit.models.reward_model import reward_logits
        from alignkit.rewards.base import as_text

        width = max(len(ex.responses) for ex in examples)
        prompts = [as_text(ex.prompt) for ex in examples for _ in ex.responses]
        responses = [as_text(r) for ex in examples for r in ex.responses]
        flat = reward_logits(module, self.tokenizer, prompts, responses, self.max_length)
        device = flat.device
        mask = torch.zeros(len(examples), width, dtype=torch.bool, device=device)
        scores = torch.zeros(len(examples), width, device=device)
        for b, ex in enumerate(examples):
            mask[b, : len(ex.responses)] = True
            scores[b, : len(ex.responses)] = torch.tensor(ex.scores, dtype=torch.float32)
        rewards = torch.zeros(len(examples), width, device=device, dtype=flat.dtype).masked_scatter(mask, flat)
        return rewards, scores, mask

    def loss(self, module, examples: Sequence[Example]):
        return self.loss_of(*self.rewards(module, examples))

    def loss_of(self, rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor):
        """The summed loss and metrics of rewards already computed (evaluation scores each batch once)."""
        from alignkit.losses import RankedBatch

        batch = RankedBatch(rewards.float(), None, mask.long(), scores, mask)
        losses, metrics = self.loss_fn(batch, **self.hp)
        return losses.sum(), {"loss": float(losses.detach().mean()), **{k: float(v) for k, v in metrics.items()}}

    @torch.no_grad()
    def evaluate(self, module, examples: Sequence[Example], batch_size: int) -> dict[str, float]:
        from alignkit.eval.metrics import preference_accuracy

        module.eval()
        correct_weighted, pairs, loss_sum = 0.0, 0.0, 0.0
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            rewards, scores, mask = self.rewards(module, chunk)
            n_pairs = _count_pairs(scores, mask)
            if n_pairs:
                correct_weighted += preference_accuracy(rewards.tolist(), scores.tolist(), mask.tolist()) * n_pairs
            pairs += n_pairs
            loss_sum += float(self.loss_of(rewards, scores, mask)[0])
        return {"accuracy": correct_weighted / max(pairs, 1), "loss": loss_sum / max(len(examples), 1),
                "pairs": pairs}


def _count_pairs(scores: torch.Tensor, mask: torch.Tensor) -> int:
    valid = mask[:, :, None] & mask[:, None, :]
    return int((valid & (scores[:, :, None] > scores[:, None, :])).sum())


def scorer_and_preferences(cfg, kind: str | None = None):
    """What a reward model and a preference model both start from: the accelerator, the encoder (or
    causal LM) with its new head and ``max_length`` set, its tokenizer, and the preference rows as
    text (the model tokenizes pairs itself), training rows with every response tied dropped.
    ``kind``: the reward-model kind to build (default ``reward_model.kind``).

    Returns ``(accelerator, model, tokenizer, train, held_out)``."""
    from alignkit.data.pipeline import load_split
    from alignkit.models.reward_model import load_reward_model
    from alignkit.train.accelerator import make_accelerator

    rm_cfg = cfg.reward_model
    accelerator = make_accelerator(cfg.train)  # seeds every process first: a new head starts the same on each
    model, tokenizer = load_reward_model(cfg.model.name_or_path, kind=kind or rm_cfg.kind,
                                         trust_remote_code=cfg.model.trust_remote_code)
    train, held_out = load_split(cfg.data, seed=cfg.train.seed, need="preferences", method=cfg.method)
    train = [ex for ex in train if len(set(ex.scores)) > 1]  # all-tied rows have no pair to learn from
    model.max_length = rm_cfg.max_length  # stored with the model, used when it scores
    return accelerator, model, tokenizer, train, held_out


def train_reward_model(cfg) -> Path:
    from alignkit.models.reward_model import compute_center_and_std, save_reward_model, store_center
    from alignkit.rewards.base import as_text
    from alignkit.train.loop import train_loop

    rm_cfg = cfg.reward_model
    accelerator, model, tokenizer, train, held_out = scorer_and_preferences(cfg)
    method = RewardModelMethod(tokenizer, rm_cfg.loss, cfg.loss, rm_cfg.max_length)
    evaluate = (lambda m: method.evaluate(m, held_out, cfg.train.batch_size)) if held_out else None

    def on_save(module, out_dir: Path, state_dict=None) -> None:
        save_reward_model(module, tokenizer, out_dir, state_dict=state_dict)

    train_loop(cfg.train, method, model, train, evaluate=evaluate, on_save=on_save, desc="reward model",
               accelerator=accelerator)
    if rm_cfg.center_examples > 0:
        # after the save, on every process alike: under FSDP / ZeRO-3 (which hook ``model`` in place)
        # each forward is a collective
        ref = train[: rm_cfg.center_examples]
        prompts = [as_text(ex.prompt) for ex in ref for _ in ex.responses]
        responses = [as_text(r) for ex in ref for r in ex.responses]
        center, spread = compute_center_and_std(model, tokenizer, prompts, responses, cfg.train.batch_size,
                                                rm_cfg.max_length)
        if is_main():
            store_center(Path(cfg.train.output_dir) / "final", center, spread)
        barrier()
    return Path(cfg.train.output_dir)


def check_config(cfg) -> None:
    from alignkit.losses import check_hyperparameters

    check_hyperparameters(cfg.reward_model.loss, cfg.loss)  # reward_model.loss picks one; loss: its arguments


register_method(MethodSpec("reward_model", "reward_model", train_reward_model, data="pairs", check=check_config,
                           sections=("loss", "reward_model")))
