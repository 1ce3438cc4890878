"""The comparison page in a real headless browser (Debian's chromium): the table rows are in the
DOM after load, every embedded plot decodes (naturalWidth > 0), and a screenshot is not blank.

Skipped when chromium is not installed (``apt-get install -y chromium``).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from alignkit.eval.report import ReportRow, write_compare_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
)

# Run after the load event: write each image's decoded width into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-natural-width", String(img.naturalWidth));
  document.body.setAttribute("data-probe", "done");
});
</script>"""


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def report(tmp_path: Path) -> Path:
    def samples(r, kl=None):
        return [
            {"prompt": f"prompt {i}", "responses": [f"a reply number {i}"], "rewards": {"vader": [r + 0.1 * i]},
             **({"kl": [kl]} if kl is not None else {})}
            for i in range(3)
        ]

    def result(r, kl):
        return {
            "rewards": {"vader": {"mean": r, "stderr": 0.05}},
            "msttr_100": 0.7,
            "distinct_1": 0.5,
            "distinct_2": 0.8,
            "unique_1": 10,
            "unique_2": 20,
            "length": 8.0,
            "perplexity": {"perplexity": 9.0},
            "kl": {"mean": kl, "stderr": 0.1},
            "best_of_k": {"k": [1, 2], "rewards": {"vader": {"mean": [r, r + 0.1], "stderr": [0.05, 0.05]}}},
        }

    curve = [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5}]
    rows = [
        ReportRow("start-model", result(0.1, 0.0), "ok", samples(0.1), group="start"),
        ReportRow("dpo-run", result(0.3, 0.4), "ok", samples(0.3, 0.4), curve, group="dpo", setting="beta=0.1"),
        ReportRow("dpo-run2", result(0.5, 0.9), "ok", samples(0.5, 0.9), curve, group="dpo", setting="beta=0.03"),
        ReportRow("raft-run", result(0.2, 0.3), "ok", samples(0.2, 0.3), curve, group="raft"),
        ReportRow("ppo-run", None, "failed: RuntimeError: boom", [], group="ppo"),
    ]
    return write_compare_report(tmp_path / "report", rows, samples_shown=3, bootstrap=100) / "report.html"


def test_report_renders_in_chromium(tmp_path):
    page = report(tmp_path)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))

    dom = chromium(
        ["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path / "profile1"
    ).stdout
    assert 'data-probe="done"' in dom, dom[-2000:]
    matched = dom[dom.index('class="results matched"') :]
    matched = matched[: matched.index("</table>")]
    assert matched.count("<tr>") == 1 + 2 and "Reward at KL 0.30" in matched  # dpo and raft, at raft's KL
    table = dom[dom.index('class="results"') :]
    table = table[: table.index("</table>")]
    for label in ("start-model", "dpo-run", "ppo-run", "failed: RuntimeError: boom"):
        assert label in table
    assert table.count("<tr>") == 1 + 5
    assert "each method's settings and frontier" in dom and "diversity (MSTTR-100)" in dom
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == 6 and all(w > 0 for w in widths), widths

    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path / "profile2")
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert img.shape[:2] == (2000, 1200)
    assert float(img.std()) > 0.05  # text, table borders and plots: far from a blank page
    assert float((img < 0.5).mean()) > 0.005  # some dark pixels (text, lines)
