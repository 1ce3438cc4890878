"""Helpers for the labelling tests: a project over a small generated-samples file."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def sample_rows(n: int = 3, k: int = 4) -> list[dict]:
    """Rows as `alignkit generate` writes them without rewards: {prompt, responses}."""
    return [{"prompt": f"Review {i}: the movie was", "responses": [f"answer {j} to {i}. It was fine." for j in range(k)]}
            for i in range(n)]


def write_project(tmp_path, rows=None, **config) -> "object":
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (rows if rows is not None else sample_rows())))
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump({"data": "samples.jsonl", "tasks": ["rank", "choose", "rate", "spans"], **config}))
    return path


SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(project_path: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from alignkit.cli import main; sys.exit(main())",
                             "label", "serve", str(project_path), f"port={port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")
