"""The learning-rate schedule: the first warm-up step already learns; after warm-up, transformers' curves."""

import math

import pytest
import torch

from alignkit.config import TrainConfig
from alignkit.train.accelerator import make_optimizer, schedule_factor


def test_warmup_starts_at_lr_over_warmup_then_decays_by_hand():
    """warmup 4, total 10, linear: steps 0-3 at 1/4, 2/4, 3/4, 4/4; then 1 - (s - 4) / 6: 1, 5/6, ..., 1/6."""
    linear = [schedule_factor(s, kind="linear", warmup=4, total=10) for s in range(10)]
    assert linear == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert [schedule_factor(s, kind="constant", warmup=2, total=6) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    # cosine, warmup 2, total 6: step 4 is half-way through the decay, (1 + cos(pi / 2)) / 2 = 0.5
    cosine = [schedule_factor(s, kind="cosine", warmup=2, total=6) for s in range(6)]
    assert cosine == pytest.approx([0.5, 1.0, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])
    assert schedule_factor(0, kind="linear", warmup=0, total=5) == 1.0  # no warm-up: the full rate at once


def test_the_first_optimizer_step_runs_at_lr_over_warmup_and_after_warmup_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    module = torch.nn.Linear(2, 1)
    optimizer, scheduler = make_optimizer(module, TrainConfig(learning_rate=0.1, warmup_steps=4, schedule="linear"), 10)
    reference = get_linear_schedule_with_warmup(torch.optim.AdamW(module.parameters(), lr=0.1), 4, 10)
    used = []
    for step in range(10):
        used.append(optimizer.param_groups[0]["lr"])  # the rate optimizer.step() would use now
        if step >= 4:
            assert used[-1] == pytest.approx(reference.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        reference.step()
    assert used[0] == pytest.approx(0.1 / 4) and used[3] == pytest.approx(0.1)
