"""A trained reward model as a :class:`~alignkit.rewards.base.Reward`.

Scores are ``reward_logits - center_mean``: the raw model output minus the mean
stored with the model by :func:`~alignkit.models.reward_model.save_reward_model`
(0 for a model saved without one). Pairs are scored in batches of ``batch_size``,
longest first by characters so that each batch pads little, under
``torch.no_grad()`` in eval mode; the order of the returned scores is the order of
the inputs. Truncation to ``max_length`` tokens keeps the first tokens of the
response (all of it when it fits) and the last tokens of the prompt in the room
left; see :func:`~alignkit.models.reward_model.encode_pairs`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tqdm.auto import tqdm

from alignkit.models.reward_model import RewardModel, load_reward_model, reward_logits
from alignkit.rewards.base import Reward, check_batch


class ModelReward(Reward):
    """Scores pairs with a :class:`~alignkit.models.reward_model.RewardModel` (build one with :meth:`from_path`)."""

    def __init__(
        self,
        model: RewardModel,
        tokenizer: Any,
        name: str = "reward_model",
        batch_size: int = 32,
        max_length: int | None = None,
        progress: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_length = max_length or model.max_length
        self.progress = progress

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> ModelReward:
        """Load with :func:`~alignkit.models.reward_model.load_reward_model` onto ``device``.

        ``device`` defaults to CUDA when available. A base checkpoint (no trained head)
        is refused: its scores would be noise.
        """
        model, tokenizer = load_reward_model(path, trust_remote_code=trust_remote_code, init_from_base=False)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, **kwargs)

    @property
    def spread(self) -> float:
        """The raw rewards' std over the responses the model was centred on (1 when it was not measured)."""
        return self.model.center_std

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        check_batch(prompts, responses)
        order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(responses[i])))
        scores = torch.empty(len(prompts), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=f"scoring ({self.name})", disable=not self.progress):
            idx = order[start : start + self.batch_size]
            raw = reward_logits(
                self.model,
                self.tokenizer,
                [prompts[i] for i in idx],
                [responses[i] for i in idx],
                self.max_length,
            )
            scores[idx] = raw.float().cpu()
        self.model.train(was_training)
        return scores - self.model.center_mean
