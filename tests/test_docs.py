"""Every runnable example of docs/ runs: ``bash`` blocks line by line through the CLI, ``python`` blocks
as scripts, in order, page by page, in one scratch folder per page. A block preceded by
``<!-- slow -->`` runs only in the slow suite; one preceded by ``<!-- not run -->`` never."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"(<!-- (slow|not run) -->\n)?```(bash|python)\n(.*?)```", re.S)
FAMILY_PAGES = ("preference", "reward-models", "sampling", "rl", "evaluation", "scaling-out", "nash_xpo", "maxmin")


def blocks(page: str, slow: bool) -> list[tuple[str, str]]:
    text = (DOCS / f"{page}.md").read_text()
    return [(lang, body) for _, mark, lang, body in FENCE.findall(text) if mark != "not run" and (mark == "slow") == slow]


def run_blocks(page: str, slow: bool, tmp_path: Path, monkeypatch) -> None:
    todo = blocks(page, slow)
    if not todo:
        pytest.skip(f"docs/{page}.md has no {'slow ' if slow else ''}examples")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    for lang, body in todo:
        if lang == "python":
            exec(compile(body, f"<a python block of docs/{page}.md>", "exec"), {"__name__": "__docs__"})
            continue
        for line in body.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if not argv:
                continue
            if argv[0] == "alignkit":
                assert main([*argv[1:], *_quiet(argv)]) == 0, line
            else:
                subprocess.run(argv, check=True, timeout=900)


def _quiet(argv: list[str]) -> list[str]:
    """No progress bars in test logs (an override every train/eval config has)."""
    if argv[1] == "train":
        return ["train.progress=false"]
    return ["progress=false"] if argv[1] == "eval" else []


def test_every_family_has_a_page_with_a_runnable_example():
    for page in FAMILY_PAGES:
        assert blocks(page, slow=False) or blocks(page, slow=True), page


@pytest.mark.parametrize("page", FAMILY_PAGES)
def test_docs_examples_run(page, tmp_path, monkeypatch):
    run_blocks(page, False, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("page", FAMILY_PAGES)
def test_slow_docs_examples_run(page, tmp_path, monkeypatch):
    run_blocks(page, True, tmp_path, monkeypatch)


def test_the_examples_are_found():
    assert sys.version_info >= (3, 10)
    found = blocks("preference", slow=False)
    assert [lang for lang, _ in found] == ["bash", "python"] and "alignkit train" in found[0][1]


def test_metrics_md_documents_every_metric_the_losses_and_the_loop_log(tmp_path):
    """Every key a registered loss returns, and every key of a training step and its evaluation."""
    import torch

    import alignkit
    from alignkit.losses import LOSSES, RankedBatch
    from alignkit.train.candidates import Candidates
    from alignkit.train.sampling import stage_metrics

    documented = set(re.findall(r"`([a-z_0-9/]+)`", (DOCS / "metrics.md").read_text()))
    batch = RankedBatch(torch.tensor([[-4.0, -6.0], [-3.0, -5.0]]), torch.tensor([[-5.0, -5.0], [-4.0, -4.0]]),
                        torch.tensor([[2.0, 3.0], [1.0, 2.0]]), torch.tensor([[2.0, 1.0], [1.0, 0.0]]),
                        torch.ones(2, 2, dtype=torch.bool))
    logged = {key for fn in LOSSES.values() for key in fn(batch)[1]}
    run = alignkit.train("dpo", model="tiny-llama", train_data="alignkit:tiny_pairs.jsonl", output_dir=tmp_path / "r",
                         data={"eval_size": 4}, train={"max_steps": 1, "batch_size": 4, "progress": False})
    logged |= {k.removeprefix("eval/") for r in run.metrics for k in r}
    candidates = Candidates.of_scores(torch.tensor([[1.0, 0.0]]))
    candidates.kept = torch.tensor([[True, False]])
    logged |= set(stage_metrics(candidates))
    assert logged - documented == set()


@pytest.mark.parametrize("config", ["ppo_tiny", "grpo_tiny"])
def test_metrics_md_documents_every_metric_an_rl_step_logs(tmp_path, config):
    """Every key of an on-policy step (PPO: the critic's; GRPO: the in-loss KL) and of its evaluation."""
    import json

    from alignkit.config import load_config
    from alignkit.train.run import run_train

    documented = set(re.findall(r"`([a-z_0-9/]+)`", (DOCS / "metrics.md").read_text()))
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"train.output_dir={tmp_path}", "train.progress=false",
                                                            "train.max_steps=1", "train.eval_every=1",
                                                            "data.eval_size=4"])
    out = run_train(cfg)
    logged = {k for line in (out / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert "policy/approxkl_avg" in logged and "eval/objective/kl" in logged
    assert logged - documented == set()
