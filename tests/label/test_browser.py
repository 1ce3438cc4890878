"""The whole loop as people use it, in headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
`alignkit generate` -> `alignkit label serve` -> two annotators rank, choose and mark spans with keyboard,
mouse and drag -> `alignkit label stats` -> `alignkit label export` -> `alignkit train` (listwise_dpo, 2 steps).

Skipped when chromium or Playwright is missing. Set ALIGNKIT_LABEL_SCREENSHOTS=DIR to also save a
1280x800 screenshot of each task page there (docs/label.md's pictures come from this).
"""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from label_helpers import free_port, serve, write_project

from alignkit.cli import main
from alignkit.config import load_config
from alignkit.label.importer import open_project
from alignkit.label.project import load_project
from alignkit.label.stats import task_stats
from alignkit.train.run import run_train

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def submit(page, key="Enter"):
    """Press ``key`` and wait until the server saved the label and the next page loaded."""
    with page.expect_navigation():
        page.keyboard.press(key)


def rank_by_keyboard(page, ranks):
    for r in ranks:  # each digit ranks the selected response, and the selection moves on
        page.keyboard.press(str(r))
    submit(page)


def rank_by_mouse(page):
    """Drag response A onto rank 2, click B's rank 1, C's and D's rank 3: A=2, B=1, C=3, D=3 (a tie)."""
    page.locator(".card").nth(0).drag_to(page.locator('.tier[data-rank="2"]'))
    page.locator(".card").nth(1).locator('button[data-rank="1"]').click()
    page.locator(".card").nth(2).locator('button[data-rank="3"]').click()
    page.locator(".card").nth(3).locator('button[data-rank="3"]').click()
    assert page.locator('.tier[data-rank="3"] .chip').count() == 2
    with page.expect_navigation():
        page.locator("#submit").click()


def mark_span_by_keyboard(page):
    page.keyboard.press("Shift+ArrowRight")  # words 1-2 selected
    page.keyboard.press("1")  # the first category
    assert page.locator("#span-list li").count() == 1
    page.keyboard.press("m")
    page.keyboard.type("the price")
    page.keyboard.press("Escape")
    submit(page)


def mark_span_by_mouse(page):
    page.evaluate("""() => {  // select the first two words as a person would by dragging over them
        const spans = [...document.querySelectorAll('#span-text > span')].filter(s => s.textContent.trim());
        const range = document.createRange();
        range.setStart(spans[0].firstChild, 0);
        range.setEnd(spans[1].firstChild, spans[1].textContent.length);
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
        document.querySelector('#span-text').dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
    }""")
    page.locator("[data-category]").nth(0).click()
    page.locator("#flag").click()  # flagged: the text is garbled
    with page.expect_navigation():
        page.locator("#submit").click()


def rate(page, who):
    """ann: keys, flag B as a hallucination (w) before rating it; bob: clicks. Ratings A-D 6 2 5 3 / 7 2 4 3."""
    if who == "ann":
        for key in ["6", "w", "2", "5", "3"]:
            page.keyboard.press(key)
        submit(page)
        return
    for n, r in enumerate([7, 2, 4, 3]):
        page.locator(".card").nth(n).locator(f'[data-rating="{r}"]').click()
    with page.expect_navigation():
        page.locator("#submit").click()


def test_generate_label_export_train(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    assert main(["generate", str(CONFIGS / "raft_tiny.yaml"), "data.max_rows=2", "sampling.num_samples=4",
                 "sampling.max_new_tokens=10", "rewards=[]", "train.progress=false", "-o", str(samples)]) == 0
    project = tmp_path / "project.yaml"
    project.write_text(yaml.safe_dump({"data": "samples.jsonl", "tasks": ["rank", "choose", "spans", "rate"],
                                       "annotators_per_item": 2, "skip_bad_rows": True}))
    port = free_port()
    urls = {}
    for who in ("ann", "bob"):
        assert main(["label", "add-annotator", str(project), who, f"port={port}"]) == 0
        urls[who] = capsys.readouterr().out.strip().splitlines()[-1]
    n_items = open_project(load_project(project)).item_count()  # rows with an empty response are left out
    assert n_items >= 1
    server = serve(project, port)
    shots = os.environ.get("ALIGNKIT_LABEL_SCREENSHOTS")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            errors = []
            for who in ("ann", "bob"):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(urls[who])
                assert who in page.locator("header .who").inner_text()
                for task in ("rank", "choose", "spans", "rate"):
                    page.goto(f"http://127.0.0.1:{port}/task/{task}")
                    if shots and who == "ann":
                        page.screenshot(path=str(Path(shots) / f"label_{task}.png"))
                    size = page.evaluate("[document.documentElement.scrollHeight, innerHeight]")
                    assert size[0] <= size[1], f"{task} page scrolls at 1280x800: {size}"
                    for _ in range(n_items):
                        if task == "rank":
                            rank_by_keyboard(page, [1, 2, 2, 4]) if who == "ann" else rank_by_mouse(page)
                        elif task == "choose":
                            submit_key = "1" if who == "ann" else "3"  # A, or a tie
                            page.keyboard.press(submit_key)
                            submit(page)
                        elif task == "spans":
                            mark_span_by_keyboard(page) if who == "ann" else mark_span_by_mouse(page)
                        else:
                            rate(page, who)
                    assert page.locator("body").get_attribute("data-page") == "done"
            browser.close()
            assert errors == []
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)

    assert main(["label", "stats", str(project)]) == 0
    stats = capsys.readouterr().out
    assert f"rank: {2 * n_items} labels on {n_items} items ({n_items} with 2+ annotators)" in stats
    # both marked the first two words as Irrelevant (keyboard and mouse): span F1 1; ann chose A, bob a tie
    assert f"choose: {2 * n_items} labels" in stats and "span F1 1.000" in stats, stats
    assert f"items with disagreement: {n_items}: 1" in stats.split("choose:")[1], stats
    assert f"flagged: {n_items}" in stats
    # ratings 6 2 5 3 and 7 2 4 3 per item: 2 of 4 responses rated the same, pairwise agreement 0.5
    assert "Krippendorff's alpha (ordinal)" in stats.split("rate:")[1] and "pairwise agreement 0.500" in \
        stats.split("rate:")[1].split("\n")[1], stats

    ranked, pairwise = tmp_path / "ranked.jsonl", tmp_path / "pairwise.jsonl"
    assert main(["label", "export", str(project), "-f", "ranked", "-o", str(ranked), "--per-annotator"]) == 0
    assert main(["label", "export", str(project), "-f", "pairwise", "-o", str(pairwise)]) == 0
    rows = [json.loads(line) for line in ranked.read_text().splitlines()]
    assert {r["annotator"]: r["scores"] for r in rows[:2]} == {"ann": [3, 2, 2, 0], "bob": [2, 3, 1, 1]}
    rated = tmp_path / "rated.jsonl"
    assert main(["label", "export", str(project), "-f", "ranked", "-o", str(rated), "--task", "rate"]) == 0
    assert json.loads(rated.read_text().splitlines()[0])["scores"] == [6.5, 2.0, 4.5, 3.0]  # mean ratings
    assert pairwise.read_text() == ""  # ann chose A, bob a tie: no strict majority for any pair
    run = tmp_path / "run"
    run_train(load_config(None, [
        "method=listwise_dpo", "model.name_or_path=tiny-llama", f"data.train={ranked}", "data.max_length=64",
        f"train.output_dir={run}", "train.max_steps=2", "train.batch_size=2", "train.progress=false"]))
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    assert (run / "final" / "model.safetensors").is_file()


def test_the_page_moves_on_only_after_the_server_saved(tmp_path):
    """Server killed while a label is being submitted: the page stays, says "not saved", keeps the
    label; after a restart the same key press saves it and the page moves on."""
    path = write_project(tmp_path, tasks=["rank"])
    port = free_port()
    token = open_project(load_project(path)).add_annotator("ann")
    server = serve(path, port)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/login/{token}")
            page.goto(f"http://127.0.0.1:{port}/task/rank")
            for key in "1234":
                page.keyboard.press(key)
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            page.keyboard.press("Enter")
            page.wait_for_selector("#status.bad")
            assert "not saved" in page.locator("#status").inner_text()
            assert page.locator("body").get_attribute("data-item") == "1"
            server = serve(path, port)
            submit(page)
            assert page.locator("body").get_attribute("data-item") == "2"
            browser.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    assert open_project(load_project(path)).labels("rank") == [("ann", 1, {"ranks": [1, 2, 3, 4]})]


def test_two_annotators_on_real_qa_feedback(tmp_path, shared_data):
    """Real Fine-Grained RLHF items (question, passages, 4 answers): both rank by keyboard and mark a span in
    prediction 1; stats compare them with the file's own annotator; the qa-feedback export carries their spans."""
    source = shared_data / "qa-feedback" / "dev_feedback.json"
    project = tmp_path / "project.yaml"
    project.write_text(yaml.safe_dump({"data": str(source), "tasks": ["rank", "spans"], "max_items": 1}))
    port = free_port()
    store = open_project(load_project(project))
    tokens = {who: store.add_annotator(who) for who in ("ann", "bob")}
    server = serve(project, port)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for who, ranks in (("ann", [1, 2, 3, 4]), ("bob", [1, 3, 2, 4])):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/login/{tokens[who]}")
                page.goto(f"http://127.0.0.1:{port}/task/rank")
                assert "question:" in page.locator("#prompt").inner_text()
                rank_by_keyboard(page, ranks)
                page.goto(f"http://127.0.0.1:{port}/task/spans")
                size = page.evaluate("[document.documentElement.scrollHeight, innerHeight]")
                assert size[0] <= size[1], size
                mark_span_by_keyboard(page) if who == "ann" else mark_span_by_mouse(page)
                assert page.locator("body").get_attribute("data-page") == "done"
            browser.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    stats = task_stats(store, load_project(project), "spans")
    assert stats.labels == 3 and set(stats.by_annotator) == {"ann", "bob", "import:qa-feedback"}
    out = tmp_path / "feedback.json"
    assert main(["label", "export", str(project), "-f", "qa_feedback", "-o", str(out), "--per-annotator"]) == 0
    rows = json.loads(out.read_text())
    prediction = rows[0]["prediction 1"]
    first_two_words = " ".join(prediction.split()[:2])
    by_annotator = {r["annotator"]: r["feedback"]["errors"] for r in rows}
    for who in ("ann", "bob"):
        (error,) = by_annotator[who]
        assert error["error type"] == "Irrelevant" and prediction[error["start"]:error["end"]] == first_two_words
    assert by_annotator["import:qa-feedback"] == json.loads(source.read_text())[0]["feedback"]["errors"]
    # preference now comes from the two rankings: mean ranks A 1, B 2.5, C 2.5, D 4 -> 1v2 1, 1v3 1, 1v4 1, 2v3 0, ...
    assert rows[0]["preference"] == [1, 1, 1, 0, 1, 1]
