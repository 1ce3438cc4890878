"""The optimizer, the learning-rate schedule and the allocator settings of a run."""

import math
import sys

import pytest
import torch

from alignkit.config import TrainConfig
from alignkit.train.accelerator import (
    fused_adamw_supported,
    make_optimizer,
    return_freed_memory,
    schedule_factor,
)


def test_the_fused_adamw_step_equals_the_default_one():
    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=fused or None)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_the_run_optimizer_is_fused_for_cpu_float_parameters():
    module = torch.nn.Linear(3, 2)
    optimizer, _ = make_optimizer(module, TrainConfig(learning_rate=1e-3), total_steps=2)
    assert optimizer.defaults["fused"] is True
    assert not fused_adamw_supported([torch.zeros(2, dtype=torch.long)]) and not fused_adamw_supported([])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_is_fixed_unless_the_user_set_it(monkeypatch):
    assert return_freed_memory()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not return_freed_memory()


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
