"""Nothing lost: a label the server acknowledged survives ``kill -9`` of the server process."""

import json
import signal
import urllib.request
from http.cookiejar import CookieJar

from label_helpers import free_port, serve, write_project

from alignkit.label.importer import open_project
from alignkit.label.project import load_project


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

