"""The optimizer and allocator settings of a run: same math, less time and memory."""

import sys

import pytest
import torch

from alignkit.config import TrainConfig
from alignkit.train.accelerator import fused_adamw_supported, make_optimizer, return_freed_memory


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
