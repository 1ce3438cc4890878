"""Re-make the screenshots in docs/label.md: a throw-away project of four short answers per prompt,
served on a free port, each task page captured at 1280x800 by Debian's chromium (Playwright).

    PYTHONPATH=src python docs/label_screenshots.py
"""

import json
import signal
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "label"))
from label_helpers import free_port, serve  # noqa: E402

from alignkit.label.importer import open_project  # noqa: E402
from alignkit.label.project import load_project  # noqa: E402

DOCS = Path(__file__).resolve().parent
ROWS = [{"prompt": "Why is the sky blue? Answer in two or three sentences.", "responses": [
    "Sunlight is scattered by the molecules of the air, and blue light is scattered much more than red because "
    "its wavelength is shorter (Rayleigh scattering). So blue light reaches our eyes from every part of the sky.",
    "The sky is blue because it reflects the colour of the oceans, which cover most of the Earth. On cloudy days "
    "there is less reflection, so the sky looks grey.",
    "Blue light has a shorter wavelength and is scattered more strongly by nitrogen and oxygen molecules. At sunset "
    "light crosses more air, the blue is scattered away, and the sky turns red and orange.",
    "Because of scattering. Scattering. The sky is blue.",
]}]


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp / "project.yaml").write_text("data: samples.jsonl\ntasks: [rank, choose, rate, spans]\nspan_response: 2\n")
    port = free_port()
    project = load_project(tmp / "project.yaml", [f"port={port}"])
    token = open_project(project).add_annotator("ann")
    server = serve(tmp / "project.yaml", port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/login/{token}")
            keys = {"rank": ["1", "3", "2", "4"], "choose": ["2"], "rate": ["6", "w", "2", "5", "3"],
                    "spans": ["ArrowRight"] * 4 + ["Shift+ArrowRight"] * 13 + ["3", "ArrowRight"] + ["m"]}
            for task, presses in keys.items():
                page.goto(f"http://127.0.0.1:{port}/task/{task}")
                for key in presses:
                    page.keyboard.press(key)
                if task == "spans":
                    page.keyboard.type("Rayleigh scattering: air molecules scatter short (blue) wavelengths most.")
                    page.keyboard.press("Escape")
                page.screenshot(path=str(DOCS / f"label_{task}.png"))
                small = Image.open(DOCS / f"label_{task}.png").convert("RGB").quantize(colors=64)
                small.save(DOCS / f"label_{task}.png", optimize=True)
            browser.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main()
