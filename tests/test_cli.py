"""The CLI's error contract: a user-caused failure is one line on stderr and exit 2."""

import errno

from alignkit import cli


def test_disk_full_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    class SafetensorError(Exception):  # what safetensors raises: not an OSError, the OS text inside
        pass

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("alignkit.train.run.run_train", full)
    (tmp_path / "c.yaml").write_text("method: sft\n")
    assert cli.main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alignkit train: error: no space left on device (SafetensorError")

    monkeypatch.setattr("alignkit.train.run.run_train", lambda cfg: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", "x")))
    assert cli.main(["train", str(tmp_path / "c.yaml")]) == 2


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path):
    import pytest

    monkeypatch.setattr("alignkit.train.run.run_train", lambda cfg: 1 / 0)
    (tmp_path / "c.yaml").write_text("method: sft\n")
    with pytest.raises(ZeroDivisionError):
        cli.main(["train", str(tmp_path / "c.yaml")])


def test_python_dash_m_knows_every_command():
    """`python -m alignkit.cli` (and `python -m alignkit`) list the commands the script lists: run as
    __main__, the file is a second copy of the module, which the command modules do not register into."""
    import subprocess
    import sys

    for module in ("alignkit.cli", "alignkit"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True).stdout
        for command in ("train", "demo", "compare", "label", "config", "methods"):
            assert command in out, (module, command)
