"""Nothing lost: a label the server acknowledged survives ``kill -9`` of the server process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from label_helpers import write_project

from alignkit.label.importer import open_project
from alignkit.label.project import load_project

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
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def test_a_submitted_label_survives_kill_9(tmp_path):
    path = write_project(tmp_path)
    token = open_project(load_project(path)).add_annotator("ann")
    port = free_port()
    proc = serve(path, port)
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        base = f"http://127.0.0.1:{port}"
        opener.open(f"{base}/login/{token}")
        html = opener.open(f"{base}/task/rank").read().decode()
        data = json.loads(html.split('id="item-data">', 1)[1].split("</script>", 1)[0])
        body = json.dumps({"task": "rank", "item": data["item"], "value": {"ranks": [2, 1, 2, 3]}}).encode()
        request = urllib.request.Request(f"{base}/api/label", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-CSRF-Token": data["csrf"]})
        assert json.loads(opener.open(request).read())["saved"] is True
    finally:
        proc.send_signal(signal.SIGKILL)  # no shutdown, no checkpoint: the commit must already be durable
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    restarted = serve(path, port)
    try:
        store = open_project(load_project(path))
        assert store.labels("rank") == [("ann", data["item"], {"ranks": [2, 1, 2, 3]})]
        home = opener.open(f"http://127.0.0.1:{port}/").read().decode()
        rank_row = home.split("Rank the responses", 1)[1].split("</tr>", 1)[0]
        assert "<td>1</td>" in rank_row  # done: 1
    finally:
        restarted.send_signal(signal.SIGKILL)
        restarted.wait(timeout=30)

