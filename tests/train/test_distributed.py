"""Data parallelism: 2 CPU processes (gloo, through ``accelerate launch``) train like 1 with the same global batch.

One launch of 2 processes runs SFT, then DPO with a precomputed reference (whose log-probs each
process computes for its half of the data and then gathers), with global batch 8 = 2 examples x 2
accumulation steps x 2 processes and a checkpoint at step 2 of 4; then two stages each of RAFT and
iterative DPO (whose prompts the processes sample and score half each) and two PPO steps (each
process its own prompts) and a reward model, all through ``alignkit.cli.main``. In this process SFT and DPO run again
with 8 x 1 x 1, and resumed from the 2-process checkpoint with 4 x 2 x 1. All three must end with
the same weights and log the same losses.

Tolerances, against lr = 1e-3: the runs see the same examples in each step but sum per-example
gradients in another order, over differently packed rows and through a gloo all-reduce, so the
gradients agree to fp32 rounding (~1e-7 relative). Adam divides by sqrt(v), so an element whose
gradient is itself at rounding level (~1e-9) takes a step of noisy size up to lr: measured, 5 of
197k elements differ by up to 1.2e-5 (SFT; DPO: 1e-6), and the 99.9th percentile is 4e-8. Hence
max |dw| <= 5e-5 (lr / 20) and 99.9th percentile <= 1e-6; logged losses within 1e-5 (measured
6e-7). A sharding bug (an example lost, duplicated or mis-weighted) changes most gradients by
~10% and moves most weights by ~1e-4, failing both.

The same SFT, DPO and PPO runs then go through FSDP2 (2 processes, and SFT and DPO resumed from
the sharded checkpoints on 1) and must end where DDP did, to the same tolerances.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import load_config
from alignkit.train.run import run_train

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
MAX_GAP, Q999_GAP, LOSS_GAP = 5e-5, 1e-6, 1e-5
CONFIGS = {"sft": ROOT / "configs" / "sft_tiny.yaml", "dpo": ROOT / "configs" / "dpo_tiny.yaml"}
METHODS = {
    "sft": ["method=sft", "data.train=alignkit:tiny_sft.jsonl"],
    "dpo": ["method=dpo", "data.train=alignkit:tiny_pairs.jsonl", "reference.mode=precomputed"],
}
STAGES = ["online.stages=2", "online.prompts_per_stage=5", "sampling.num_samples=2", "sampling.max_new_tokens=6",
          "sampling.batch_size=1", "train.max_steps=1", "train.batch_size=1", "train.progress=false"]
RAFT = [str(ROOT / "configs" / "raft_tiny.yaml"), *STAGES]
# stage 1 selects nothing, and in stage 0 one process's micro-batch is empty: both once broke the launch
ITERATIVE_DPO = [str(ROOT / "configs" / "iterative_dpo_tiny.yaml"), *STAGES]
REWARD_MODEL = [str(ROOT / "configs" / "reward_model_tiny.yaml"), "train.max_steps=3", "train.batch_size=2",
                "train.grad_accum=2", "train.progress=false"]  # MiniLM with a new head
# the length reward: the random tiny model's 6-token samples almost never hold a word VADER scores,
# and a reward of 0 everywhere gives no gradient, so the policy would not move
PPO = [str(ROOT / "configs" / "ppo_tiny.yaml"), "train.max_steps=2", "train.batch_size=2", "ppo.num_minibatches=1",
       "sampling.max_new_tokens=6", "rewards=[{kind: length, unit: chars}]", "train.progress=false"]
COMMON = [
    "model.name_or_path=tiny-llama",
    "data.eval_size=0",
    "train.warmup_steps=0",
    "data.max_length=96",
    "train.learning_rate=1e-3",
    "train.max_grad_norm=0",
    "train.max_steps=4",
    "train.progress=false",
]

DRIVER = """
import sys
from alignkit.cli import main

for args in {runs!r}:
    code = main(["train", *args])  # alignkit train CONFIG key=value ...
    if code:
        sys.exit(code)
"""


# Accelerate enables FSDP only on accelerators; on gloo CPU processes this puts it on its FSDP2 path
# by hand (``fully_shard``, DTensor parameters, sharded checkpoints, gathered state dicts) with the
# plugin settings of the shipped configs/accelerate/fsdp.yaml, so CI checks alignkit's side of FSDP.
FORCE_FSDP2 = f"""
import accelerate, yaml
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_settings = yaml.safe_load(open({str(ROOT / "configs" / "accelerate" / "fsdp.yaml")!r}))["fsdp_config"]
_names = {{"fsdp_version": "fsdp_version", "fsdp_offload_params": "cpu_offload"}}
_plugin = {{_names.get(k, k.removeprefix("fsdp_")): v.lower() if k == "fsdp_auto_wrap_policy" else v
           for k, v in _settings.items()}}
_init = accelerate.Accelerator.__init__

def _init_on_fsdp2(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.state.fsdp_plugin = FullyShardedDataParallelPlugin(**_plugin)
    self.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP

accelerate.Accelerator.__init__ = _init_on_fsdp2
"""

def overrides(method: str, out: Path, batch: int, accum: int, *extra: str) -> list[str]:
    return [str(CONFIGS[method]), *METHODS[method], *COMMON, f"train.output_dir={out}", f"train.batch_size={batch}",
            f"train.grad_accum={accum}", *extra]


def split(args: list[str]) -> tuple[str, list[str]]:
    return args[0], args[1:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def gaps(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Largest and 99.9th-percentile absolute difference over all weights."""
    assert a.keys() == b.keys()
    d = torch.cat([(a[k] - b[k]).abs().flatten() for k in a]).double()
    return float(d.max()), float(d.kthvalue(max(1, math.ceil(0.999 * d.numel()))).values)  # quantile() caps at 16M


OWN_SETTINGS = {"raft": RAFT, "iterative_dpo": ITERATIVE_DPO, "ppo": PPO, "reward_model": REWARD_MODEL}


def own_settings(runs: dict[str, Path]) -> list[list[str]]:
    return [[*args, f"train.output_dir={runs[m]}"] for m, args in OWN_SETTINGS.items()]


def launch(root: Path, runs: list[list[str]], processes: int = 2, fsdp2: bool = False) -> None:
    """``alignkit train`` each of ``runs`` in one ``accelerate launch`` of ``processes`` CPU processes."""
    script = root / f"driver-{processes}{'-fsdp2' if fsdp2 else ''}.py"
    script.write_text((FORCE_FSDP2 if fsdp2 else "") + DRIVER.format(runs=runs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
           "--num_processes", str(processes), "--main_process_port", str(free_port()), str(script)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(f"{script.name}: {time.perf_counter() - t0:.1f}s")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Run SFT, DPO, RAFT, iterative DPO, PPO and a reward model in one 2-process launch; returns
    {method: run folder}."""
    root = tmp_path_factory.mktemp("ddp")
    runs = {m: root / f"{m}-2proc" for m in [*METHODS, *OWN_SETTINGS]}
    launch(root, [overrides(m, runs[m], 2, 2, "train.save_every=2") for m in METHODS] + own_settings(runs))
    return runs


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_train_like_one_and_resume_in_one(two_process_runs, tmp_path, method):
    two = two_process_runs[method]
    ckpt = two / "checkpoints" / "step-2"
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert not list((two / "checkpoints").glob("*.tmp"))

    one = run_train(load_config(*split(overrides(method, tmp_path / "one", 8, 1))))
    resumed = tmp_path / "resumed"
    shutil.copytree(ckpt, resumed / "checkpoints" / "step-2")
    run_train(load_config(*split(overrides(method, resumed, 4, 2, "train.resume=true"))))

    base = weights(one)
    for name, run in (("2 processes", two), ("resumed in 1", resumed)):
        top, q999 = gaps(base, weights(run))
        print(f"{method} vs 1 process, {name}: max |dw| = {top:.2e}, 99.9% = {q999:.2e}")
        assert top <= MAX_GAP and q999 <= Q999_GAP, name
    assert losses(two) == pytest.approx(losses(one), abs=LOSS_GAP)
    assert losses(resumed) == pytest.approx(losses(one)[2:], abs=LOSS_GAP)  # steps 3 and 4
    assert len(losses(two)) == 4
    at_step_2 = {k.removeprefix("lm."): v for k, v in load_file(str(ckpt / "model.safetensors")).items()}
    assert gaps(base, at_step_2)[1] > 100 * Q999_GAP  # steps 3-4 moved the weights: the checks have teeth

def test_shard_and_gather_keep_every_item_once():
    from alignkit.distributed import gather_objects, shard, shard_bounds

    items = list(range(11))
    for world in (1, 2, 3, 4, 16):
        parts = [shard(items, i, world) for i in range(world)]
        assert [x for p in parts for x in p] == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard_bounds(5, 0, 2) == (0, 3) and shard_bounds(5, 1, 2) == (3, 5)
    assert gather_objects(shard(items)) == items  # one process: the identity


def test_two_processes_share_the_sampling_of_a_raft_stage(two_process_runs):
    from alignkit.models.loading import load_causal_lm
    from alignkit.train.prompts import draw, load_prompts
    from alignkit.train.sampling import stage_dir

    out = two_process_runs["raft"]
    cfg = load_config(*split(RAFT))
    _, tokenizer = load_causal_lm(cfg.model)
    drawn = [r.prompt for r in draw(load_prompts(cfg, tokenizer), 5, cfg.train.seed)]
    samples = [json.loads(x) for x in (stage_dir(out, 0) / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in samples] == drawn  # every prompt once, in the order of the draw
    assert all(len(r["responses"]) == len(r["scores"]) == 2 and sum(r["kept"]) == 1 for r in samples)
    stage = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert stage["gen/processes"] == 2  # both processes generated (3 and 2 prompts)
    assert (out / "final" / "model.safetensors").is_file()


def test_full_weights_gathers_an_fsdp_root_around_direct_calls_and_leaves_other_modules_alone():
    from alignkit.distributed import full_weights

    calls = []

    class ShardedRoot(torch.nn.Module):  # the two methods FSDP2 adds to a fully_shard-ed module
        def unshard(self):
            calls.append("unshard")

        def reshard(self):
            calls.append("reshard")

    with full_weights(torch.nn.Linear(2, 2)):
        calls.append("plain")
    with pytest.raises(ValueError), full_weights(ShardedRoot()):
        calls.append("generate")
        raise ValueError
    assert calls == ["plain", "unshard", "generate", "reshard"]  # resharded even when the body fails


def test_ppo_runs_its_rollouts_and_updates_in_two_processes(two_process_runs):
    out = two_process_runs["ppo"]
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss/policy_avg" in r] == [1, 2]
    assert all(math.isfinite(r["reward"]) and math.isfinite(r["objective/kl"]) for r in steps)
    assert steps[-1]["policy/approxkl_avg"] > 0  # the optimizer steps moved the policy within the PPO epochs
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "value_model.safetensors").is_file()


@pytest.fixture(scope="module")
def fsdp2_runs(tmp_path_factory, two_process_runs):
    """The DDP fixture's runs again under FSDP2 on 2 processes (the sampling methods sample their
    second stage from the sharded policy), then SFT and DPO resumed from their sharded step-2
    checkpoints under FSDP2 on 1 process."""
    root = tmp_path_factory.mktemp("fsdp2")
    runs = {m: root / m for m in [*METHODS, *OWN_SETTINGS]}
    launch(root, [overrides(m, runs[m], 2, 2, "train.save_every=2") for m in METHODS] + own_settings(runs), fsdp2=True)
    for m in METHODS:
        shutil.copytree(runs[m] / "checkpoints" / "step-2", root / f"{m}-resumed" / "checkpoints" / "step-2")
    launch(root, [overrides(m, root / f"{m}-resumed", 4, 2, "train.resume=true") for m in METHODS], 1, fsdp2=True)
    return {**runs, **{f"{m}-resumed": root / f"{m}-resumed" for m in METHODS}}


@pytest.mark.parametrize("method", [*METHODS, *OWN_SETTINGS])
def test_fsdp2_trains_like_ddp_and_its_sharded_checkpoint_resumes_on_one_process(fsdp2_runs, two_process_runs,
                                                                                method):
    ddp, fsdp = two_process_runs[method], fsdp2_runs[method]
    runs = [("FSDP2, 2 processes", fsdp)]
    if method in METHODS:
        assert (fsdp / "checkpoints" / "step-2" / "pytorch_model_fsdp_0").is_dir()  # sharded, not gathered
        runs.append(("FSDP2, resumed in 1", fsdp2_runs[f"{method}-resumed"]))
        assert losses(fsdp) == pytest.approx(losses(ddp), abs=LOSS_GAP)
    for name, run in runs:
        top, q999 = gaps(weights(ddp), weights(run))
        print(f"{method} vs DDP, {name}: max |dw| = {top:.2e}, 99.9% = {q999:.2e}")
        assert top <= MAX_GAP and q999 <= Q999_GAP, name
    if method == "reward_model":  # the head (new, seeded alike on every process) and the centering
        meta = [json.loads((run / "final" / "alignkit_reward.json").read_text()) for run in (ddp, fsdp)]
        assert meta[0]["center_mean"] == pytest.approx(meta[1]["center_mean"], abs=1e-6)
    if method == "ppo":  # the critic too, gathered and saved beside the policy
        value = load_file(str(fsdp / "final" / "value_model.safetensors"))
        assert gaps(load_file(str(ddp / "final" / "value_model.safetensors")), value)[0] <= MAX_GAP
