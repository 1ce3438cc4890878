"""Report tables, CSV, plots and the HTML page, from hand-made eval results (no model runs)."""

import csv
import re

import pytest

from alignkit.eval.report import (
    ReportRow,
    curve_points,
    html_page,
    markdown_table,
    plot_pareto,
    summary_row,
    table_cells,
    write_compare_report,
    write_csv,
)


def fake_result(reward: float, kl: float | None = 0.5, ppl: float | None = 12.0, bok: bool = True) -> dict:
    result = {
        "rewards": {
            "vader": {"mean": reward, "stderr": 0.1},
            "length": {"mean": 10 * reward, "stderr": None},
        },
        "msttr_100": 0.7,
        "distinct_1": 0.5,
        "distinct_2": 0.8,
        "unique_1": 12,
        "unique_2": 30,
        "length": 9.5,
        "win_rate": {"win": 3, "tie": 1, "loss": 4, "win_rate": 0.4375, "n": 8},
        "preference_accuracy": {"policy": 0.75},
    }
    if kl is not None:
        result["kl"] = {"mean": kl, "stderr": 0.05, "per_token": 0.01}
    if ppl is not None:
        result["perplexity"] = {"perplexity": ppl}
    if bok:
        result["best_of_k"] = {
            "k": [1, 2, 4],
            "selected_by": "vader",
            "rewards": {"vader": {"mean": [reward, reward + 0.1, reward + 0.2], "stderr": [0.1, 0.1, None]}},
        }
    return result


def fake_samples(reward: float, kl: float | None) -> list[dict]:
    """Three prompts whose rewards are ``reward`` -0.1, +0, +0.1 and whose KL is ``kl`` on each."""
    rows = []
    for i in range(3):
        row = {
            "prompt": f"prompt {i} <b>&",
            "responses": [f" answer {i} <script>alert(1)</script>"],
            "rewards": {"vader": [reward + 0.1 * (i - 1)]},
        }
        if kl is not None:
            row["kl"] = [kl]
        rows.append(row)
    return rows


def fake_rows() -> list[ReportRow]:
    """start (reward 0.1), DPO at two betas x two seeds (KL 0.5 -> 0.2, KL 1.0 -> 0.3), RAFT (KL 2 -> 0.6)."""
    curve = [{"step": s, "loss": 1 / s} for s in range(1, 5)]
    dpo = [
        ReportRow(f"dpo-beta{b}-s{seed}", fake_result(r, kl=k), "ok", fake_samples(r, k), curve,
                  group="dpo", setting=f"beta={b}", seed=seed)
        for b, r, k in ((0.5, 0.2, 0.5), (0.1, 0.3, 1.0)) for seed in (0, 1)
    ]
    return [
        ReportRow("start", fake_result(0.1, kl=0.0), "ok", fake_samples(0.1, None), group="start"),
        ReportRow("dataset chosen", fake_result(0.8, kl=None, ppl=None, bok=False), "ok", fake_samples(0.8, None)),
        *dpo,
        ReportRow(
            "raft",
            fake_result(0.6, kl=2.0),
            "ok (cached)",
            fake_samples(0.6, 2.0),
            [{"stage": 0, "reward/mean": 0.2, "train/loss": 2.0}, {"stage": 1, "reward/mean": 0.3}],
            group="raft",
        ),
        ReportRow("ppo", None, "failed: RuntimeError: out of memory | badly", [], [], group="ppo"),
    ]


def test_summary_row_flattens_an_eval_result():
    row = summary_row("dpo", fake_result(0.3))
    assert row["reward/vader"] == 0.3 and row["reward/vader_se"] == 0.1 and row["reward/length"] == 3.0
    assert row["kl"] == 0.5 and row["perplexity"] == 12.0 and row["win_rate"] == 0.4375 and row["tie"] == 1
    assert row["pref_acc"] == 0.75 and row["best_of_4/vader"] == pytest.approx(0.5)
    assert summary_row("x", None, "failed: boom") == {"method": "x", "status": "failed: boom"}


def test_table_has_raft_columns_and_drops_empty_ones():
    headers, cells = table_cells([summary_row(r.label, r.result, r.status) for r in fake_rows()])
    assert headers[:3] == ["Method", "Reward (vader)", "Reward (length)"]
    for h in (
        "PPL",
        "MSTTR-100",
        "Distinct-1",
        "Distinct-2",
        "Unique-1",
        "Unique-2",
        "Length",
        "KL",
        "Win rate (W/T/L)",
        "Pref. acc.",
        "Status",
    ):
        assert h in headers
    dpo = dict(zip(headers, cells[2]))
    assert dpo["Reward (vader)"] == "0.200 ± 0.100" and dpo["Reward (length)"] == "2.000"
    assert dpo["Win rate (W/T/L)"] == "0.438 (3/1/4)" and dpo["Unique-1"] == "12"
    assert dict(zip(headers, cells[1]))["KL"] == "—"
    assert dict(zip(headers, cells[-1]))["Status"].startswith("failed: RuntimeError")
    headers, _ = table_cells([summary_row("m", fake_result(0.1, kl=None, ppl=None))])
    assert "KL" not in headers and "PPL" not in headers


def test_markdown_table_escapes_pipes():
    text = markdown_table(["a", "b"], [["x|y", "1"]])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | 1 |"]


def test_csv_round_trip(tmp_path):
    rows = [summary_row(r.label, r.result, r.status) for r in fake_rows()]
    write_csv(tmp_path / "t.csv", rows)
    back = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["method"] for r in back] == [r["method"] for r in rows]
    assert float(back[2]["reward/vader"]) == 0.2 and back[-1]["reward/vader"] == ""


def test_curve_points_reads_steps_and_stages():
    assert curve_points([{"step": 1, "loss": 2.0}, {"step": 2}], ("loss",)) == [(1, 2.0)]
    assert curve_points([{"stage": 0, "train/loss": 3.0}], ("loss", "train/loss")) == [(1, 3.0)]
    # the KL panel: an RL run's KL to the reference, not its GRPO loss's per-token k3 (`kl`)
    from alignkit.eval.report import CURVE_KEYS

    assert curve_points([{"step": 1, "objective/kl": 4.0, "kl": 0.02}], CURVE_KEYS["kl"]) == [(1, 4.0)]
    assert curve_points([{"step": 1, "kl": 0.5}], CURVE_KEYS["kl"]) == [(1, 0.5)]  # KTO's z0


def _png_ok(path) -> bool:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    return img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and float(img[..., :3].std()) > 0.01


def test_write_compare_report(tmp_path):
    out = write_compare_report(tmp_path / "report", fake_rows(), samples_shown=2, title="t <x>",
                               start_model="/cache/abc123/pretrain/final", bootstrap=200)
    names = {
        "table.md",
        "table.csv",
        "matched_kl.md",
        "reward_vs_kl.png",
        "reward_vs_perplexity.png",
        "reward_vs_msttr.png",
        "reward_vs_distinct2.png",
        "learning_curves.png",
        "best_of_k.png",
        "report.html",
    }
    assert names <= {p.name for p in out.iterdir()}
    for png in out.glob("*.png"):
        assert _png_ok(png), png
    md = (out / "table.md").read_text()
    assert md.count("\n") == 2 + 8 and "dataset chosen" in md and "failed: RuntimeError" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and 'src="http' not in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page  # sample text is escaped
    assert "t &lt;x&gt;" in page and "Failed runs" in page
    assert "<th>start</th>" in page and "/cache/abc123" not in page.split("Every run")[0]  # a short label
    assert "<td> answer" not in page and "<td>answer 0" in page  # no stray leading space
    samples = page[page.index('class="samples"') :]
    assert samples.count("<tr>") == 1 + 2  # header + samples_shown prompts
    assert len(re.findall(r"<th>", samples)) == 1 + 7  # prompt + the seven models with samples


def test_matched_kl_headline_by_hand(tmp_path):
    """Budget: the largest KL both reach = min(DPO 1.0, RAFT 2.0) = 1.0. DPO at KL 1: its beta=0.1
    point, 0.3. RAFT: between the start (0, 0.1) and its point (2, 0.6): 0.1 + 0.5 x 0.5 = 0.35.
    Every prompt moves together, so RAFT - DPO = 0.05 in every replicate: significant."""
    out = write_compare_report(tmp_path / "r", fake_rows(), bootstrap=200)
    lines = (out / "matched_kl.md").read_text().splitlines()
    assert lines[0] == "Reward (vader) at matched KL 1.00"
    raft, dpo = lines[4].split(" | "), lines[5].split(" | ")
    assert raft[0] == "| raft" and raft[1] == "0.350" and raft[3] == "(best)"
    assert dpo[0] == "| dpo" and dpo[1] == "0.300" and dpo[3] == "[0.050, 0.050] *" and dpo[5] == "2 x 2 |"
    page = (out / "report.html").read_text()
    assert page.index("Matched KL") < page.index("Every run")


def test_no_empty_plot_panels(tmp_path):
    """Without perplexity, best-of-k or learning curves there is no plot for them (not an empty panel)."""
    rows = [ReportRow(r.label, r.result and {k: v for k, v in r.result.items() if k not in ("perplexity",
                                                                                           "best_of_k")},
                      r.status, r.samples, [], r.group, r.setting, r.seed) for r in fake_rows()]
    out = write_compare_report(tmp_path / "r", rows, bootstrap=20)
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"reward_vs_kl.png", "reward_vs_msttr.png", "reward_vs_distinct2.png"}
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3


def test_pareto_plot(tmp_path):
    path = plot_pareto(
        [(0.0, 3.0), (0.5, 2.0), (0.2, 1.0)],
        ["0", "0.5", "1"],
        [0, 1],
        ["vader", "length"],
        tmp_path / "front.png",
        chosen=1,
    )
    assert _png_ok(path)


def test_html_page_is_self_contained():
    page = html_page("T", [("Section", "<p>x</p>")])
    assert page.startswith("<!DOCTYPE html>") and "<h2>Section</h2>" in page and "<link" not in page


def test_an_error_rate_is_matched_in_its_own_direction():
    """Two prompts, one seed per method. At budget KL 1: "fine" reached error 0.1 at KL 1 (its frontier from
    the start's 0.3), "holistic" 0.2 at KL 1 and 0.4 at KL 2 (error going up is not on its frontier).
    The lowest error rate is the best: fine 0.1, holistic 0.2; read as higher-is-better it would be the
    other way round."""
    from alignkit.eval.frontier_report import matched_tables

    def samples(err, kl):
        return [{"prompt": p, "responses": ["a"], "rewards": {"rel/error_rate": [err]}, "kl": [kl]} for p in "xy"]

    rows = [ReportRow("start", {}, "ok", samples(0.3, 0.0), group="start"),
            ReportRow("fine-b1", {}, "ok", samples(0.1, 1.0), group="fine", setting="b=1"),
            ReportRow("hol-b1", {}, "ok", samples(0.2, 1.0), group="hol", setting="b=1"),
            ReportRow("hol-b2", {}, "ok", samples(0.4, 2.0), group="hol", setting="b=2")]
    table = matched_tables(rows, ["rel/error_rate"], 1.0, replicates=20)["rel/error_rate"]
    assert [(r.method, round(r.reward, 6)) for r in table.rows] == [("fine", 0.1), ("hol", 0.2)]
    assert table.rows[0].interval == pytest.approx((0.1, 0.1))
    assert table.rows[1].delta == pytest.approx((-0.1, -0.1))  # best - holistic, in the metric's own sign
