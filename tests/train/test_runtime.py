"""The run runtime: metric sums by hand, accumulation inside one optimizer step, checkpoints with extra state."""

import math

import pytest
import torch
from torch import nn

from alignkit.config import TrainConfig
from alignkit.losses.reduce import global_mean
from alignkit.train.checkpoint import list_checkpoints
from alignkit.train.runtime import MetricSums, Run, optimizer_step


def test_metric_sums_are_weighted_means_and_ignore_zero_weight_values():
    sums = MetricSums()
    sums.add({"loss": 2.0, "acc": 1.0}, weight=1.0)
    sums.add({"loss": torch.tensor(4.0), "acc": 0.0}, weight=3.0)
    sums.add({"loss": math.nan, "acc": math.nan}, weight=0.0)  # a stand-in micro-batch of a short batch
    # loss: (2*1 + 4*3 + 0) / (1 + 3 + 0) = 14 / 4 = 3.5; acc: (1*1 + 0*3) / 4 = 0.25
    assert sums.local_means() == {"loss": 3.5, "acc": 0.25}
    assert sums.values("loss")[:2] == [2.0, 4.0]
    other = MetricSums()
    other.add({"loss": 8.0}, weight=4.0)
    sums.merge(other)  # (14 + 32) / (4 + 4) = 5.75
    assert sums.local_means()["loss"] == 5.75


def linear_and_optimizer():
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    return module, torch.optim.SGD(module.parameters(), lr=0.5)


def squared_error(module, x, y, units):
    def forward():
        loss = ((module(x).squeeze(1) - y) ** 2).sum()
        return global_mean(loss, units, 1), {"loss": float(loss.detach()) / len(x)}, float(len(x))
    return forward


def test_one_step_of_8_x_1_equals_1_x_8_accumulated():
    """The gradient of 8 micro-batches of 1 example each, accumulated, is that of one batch of 8."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    x, y = torch.randn(8, 3), torch.randn(8)
    results = []
    for chunks in (1, 8):
        module, optimizer = linear_and_optimizer()
        micro = [squared_error(module, xs, ys, 8) for xs, ys in zip(x.chunk(chunks), y.chunk(chunks))]
        metrics = optimizer_step(accelerator, module, optimizer, micro, max_grad_norm=100.0)
        results.append((module.weight.detach().clone(), metrics.local_means()))
    (w1, m1), (w8, m8) = results
    torch.testing.assert_close(w1, w8, atol=1e-6, rtol=0)
    assert m1["loss"] == pytest.approx(m8["loss"], abs=1e-6) and m1["grad_norm"] == pytest.approx(m8["grad_norm"])
    assert not torch.equal(w1, linear_and_optimizer()[0].weight)  # it stepped


class Counter:
    """Extra run state a trainer tracks (like PPO's KL controller)."""

    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def run_steps(cfg, stop_after=None):
    run = Run(cfg, desc="test")
    counter = Counter()
    run.track("counter", counter)
    module = run.prepare(nn.Linear(2, 1), total_steps=4)
    seen = []
    for step in run.steps():
        seen.append(step)
        run.optimizer_step([lambda: (module(torch.ones(1, 2)).sum(), {"loss": 1.0}, 1.0)])
        counter.value += 10
        run.end_step({"step": step + 1})
        if stop_after is not None and step + 1 == stop_after:
            break
    return run, counter, seen


def test_a_run_checkpoints_its_tracked_state_and_resumes_after_the_last_checkpoint(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, save_every=2, progress=False, learning_rate=0.1)
    _, _, seen = run_steps(cfg, stop_after=3)  # interrupted after step 3: the checkpoint of step 2 is the last
    assert seen == [0, 1, 2] and [p.name for p in list_checkpoints(tmp_path)] == ["step-2"]
    cfg.resume = True
    run, counter, seen = run_steps(cfg)
    assert seen == [2, 3] and run.start_step == 2 and run.step == 4
    assert counter.value == 20 + 20  # restored to the state after step 2, then two more steps
    assert [r["step"] for r in run.history] == [3, 4] and all("step_time" in r for r in run.history)


def test_a_checkpoint_without_a_tracked_objects_state_resumes_with_it_fresh(tmp_path, capsys):
    """An older checkpoint (saved before a trainer tracked some state) resumes: the missing object
    keeps its fresh state, and one line says so, instead of a KeyError."""
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, save_every=2, progress=False, learning_rate=0.1)
    run_steps(cfg, stop_after=3)
    cfg.resume = True
    run = Run(cfg, desc="test")
    newer = Counter()
    run.track("newer", newer)  # a name the checkpoint of step 2 does not hold
    run.prepare(nn.Linear(2, 1), total_steps=4)
    assert list(run.steps()) and run.start_step == 2 and newer.value == 0
    assert "no saved state of 'newer'" in capsys.readouterr().out
