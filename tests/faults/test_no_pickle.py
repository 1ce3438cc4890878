"""Nothing in a checkpoint can run code on resume (issue 18, failure 5: PPO's scheduler was loaded
through Accelerate's ``custom_checkpoint_0.pkl`` with ``weights_only=False``).

The attacker here is strong: they plant a pickle that would create a marker folder when
unpickled, in one file of the newest checkpoint at a time, and forge its checksum in
``trainer_state.json``. Resume must refuse the file (safetensors parse it as data, torch's
``weights_only`` unpickler rejects the call), fall back, finish, and never create the marker.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from fault_runs import FAMILIES, copy_run, families

from alignkit.train.checkpoint import sha256
from alignkit.train.run import run_train


class Planted:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def plant(path: Path, marker: Path) -> None:
    """A pickle that would ``mkdir marker`` when loaded, in the container the file's loader expects."""
    if path.suffix in (".bin", ".pkl", ".pt"):
        torch.save({"state": Planted(marker)}, path)  # torch's zip format, as Accelerate writes them
    else:
        path.write_bytes(pickle.dumps(Planted(marker)))


def forge_checksum(ckpt: Path, name: str) -> None:
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["files"][name] = sha256(ckpt / name)
    state_file.write_text(json.dumps(state))


def checkpoint_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints" / "step-4").iterdir())


def test_the_planted_pickle_would_run_if_unpickled(tmp_path):
    """The test's own check: loading the planted file without weights_only does run it."""
    marker, path = tmp_path / "ran", tmp_path / "x.bin"
    plant(path, marker)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


@pytest.mark.parametrize("family", families())
def test_a_pickle_planted_in_any_checkpoint_file_never_runs(tmp_path, capsys, straight_runs, family):
    straight = straight_runs(family)
    names = checkpoint_files(straight) + ["custom_checkpoint_0.pkl"]  # the file PPO's scheduler used to be read from
    assert "trainer_state.json" in names and "model.safetensors" in names
    for name in names:
        run = copy_run(straight, tmp_path / name / "run")
        ckpt = run / "checkpoints" / "step-4"
        marker = tmp_path / name / "ran"
        plant(ckpt / name, marker)
        if name != "trainer_state.json":
            forge_checksum(ckpt, name)
        run_train(FAMILIES[family](run, "train.resume=true"))
        assert not marker.exists(), f"code in {name} ran on resume"
        out = capsys.readouterr().out
        if name == "custom_checkpoint_0.pkl":  # an extra file: Accelerate refuses the folder (no object registered)
            assert "custom checkpoints" in out, out
        elif name.startswith("random_states"):  # Accelerate skips RNG states it cannot load, with a log line
            assert "resuming from" in out
        else:
            assert f"checkpoint {ckpt} is damaged" in out, name
        assert (run / "final").is_dir()
