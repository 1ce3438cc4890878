"""The digits demo's report: table (markdown, CSV, JSON), sample grids, the soup's Pareto plot, one HTML page.

Built from :mod:`alignkit.eval.report`'s helpers (tables, page, embedded images, Pareto plot), so it
looks like ``alignkit compare``'s report.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import torch

from alignkit.eval.report import html_page, html_table, image_tag, markdown_table, plot_pareto, write_csv

GRID_COLUMNS = 8  # samples shown per digit


def save_grid(images: torch.Tensor, per_prompt: int, path: Path, scale: int = 3) -> Path:
    """One row per digit, the first ``GRID_COLUMNS`` samples of each, as a small greyscale PNG."""
    from alignkit.diffusion.digits import as_numpy_grid
    from alignkit.eval.report import _pyplot

    rows = images.shape[0] // per_prompt
    shown = images.view(rows, per_prompt, *images.shape[1:])[:, :GRID_COLUMNS].reshape(-1, *images.shape[1:])
    grid = np.kron(as_numpy_grid(shown, rows), np.ones((scale, scale), dtype=np.float32))
    _pyplot().imsave(path, grid, cmap="gray_r", vmin=0.0, vmax=1.0)
    return path


def save_grids_figure(grids: dict[str, torch.Tensor], per_prompt: int, path: Path, scale: int = 4) -> Path:
    """Every model's grid (as :func:`save_grid`) side by side under its label: the report's ``grids.png``.

    Pixels are drawn as they are (nearest neighbour, ink black on white, blank gaps white), so that
    the figure shows what the classifier saw.
    """
    from alignkit.diffusion.digits import as_numpy_grid
    from alignkit.eval.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(2.2 * len(grids), 3.0), squeeze=False)
    for ax, (label, images) in zip(axes[0], grids.items()):
        rows = images.shape[0] // per_prompt
        shown = images.view(rows, per_prompt, *images.shape[1:])[:, :GRID_COLUMNS].reshape(-1, *images.shape[1:])
        grid = np.kron(as_numpy_grid(shown, rows), np.ones((scale, scale), dtype=np.float32))
        ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120, facecolor="white")
    plt.close(fig)
    return path


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard error across seeds of every metric of ``runs`` (one eval result per seed)."""
    row: dict = {"seeds": len(runs)}
    for name in runs[0]["rewards"]:
        row[name], row[f"{name}_se"] = _mean_se([r["rewards"][name]["mean"] for r in runs])
    for key in ("kl", "diversity", "seconds"):
        if key in runs[0]:
            row[key], row[f"{key}_se"] = _mean_se([r[key] for r in runs])
    if len(runs) > 1:
        first = next(iter(runs[0]["rewards"]))
        row[f"per_seed_{first}"] = [round(r["rewards"][first]["mean"], 4) for r in runs]
    return row


def _pm(row: dict, key: str, spec: str = ".3f") -> str:
    if key not in row:
        return "—"
    se = row.get(f"{key}_se", 0.0)
    return f"{row[key]:{spec}}" + (f" ± {se:{spec}}" if se else "")


def write_digits_report(out: Path, runs: dict[str, list[dict]], grids: dict[str, torch.Tensor], soup: list[dict],
                        timings: dict[str, float], cfg, classifier_accuracy: float, cached: bool):
    """The demo's report (see :func:`write_diffusion_report`); returns (markdown, rows)."""
    return write_diffusion_report(out, runs, grids, cfg.eval_per_prompt, _notes(cfg, classifier_accuracy, timings, cached),
                                  soup=soup, soup_method=cfg.soup_method,
                                  extra={"timings": timings, "classifier_held_out_accuracy": classifier_accuracy},
                                  title="alignkit demo: aligning a digits diffusion model")


def write_diffusion_report(out: Path, runs: dict[str, list[dict]], grids: dict[str, torch.Tensor], per_prompt: int,
                           notes: str, *, soup: list[dict] = (), soup_method: str = "", extra: dict | None = None,
                           title: str = "alignkit: diffusion models compared"):
    """Write results.json, table.md/.csv, grid_<label>.png, soup.png and report.html; returns (markdown, rows).

    ``runs``: label -> one evaluation result per seed (:func:`alignkit.diffusion.evaluate.evaluate_policy`,
    plus ``seconds``), ``"start"`` first; ``grids``: label -> its ``[digits * per_prompt, 1, H, W]`` images.
    """
    rows = {label: aggregate(r) for label, r in runs.items()}
    first, *others = list(runs["start"][0]["rewards"])  # the gain is the first reward's
    headers = ["model", "seeds", f"{first} reward", "gain", *others, "KL to start (nats/image)", "diversity",
               "train time (s)"]
    cells = [[label, str(row["seeds"]), _pm(row, first),
              "—" if label == "start" else f"{row[first] - rows['start'][first]:+.3f}", *(_pm(row, o) for o in others),
              _pm(row, "kl", ".1f"), _pm(row, "diversity", ".2f"), _pm(row, "seconds", ".0f")]
             for label, row in rows.items()]
    table = markdown_table(headers, cells)
    (out / "table.md").write_text(table)
    write_csv(out / "table.csv", [{"model": label, **row} for label, row in rows.items()])
    clean = {label: [{k: v for k, v in r.items()} for r in rs] for label, rs in runs.items()}
    (out / "results.json").write_text(json.dumps({"rows": rows, "runs": clean, "soup": list(soup), **(extra or {})},
                                                 indent=1))
    save_grids_figure(grids, per_prompt, out / "grids.png")
    figures = []
    for label, images in grids.items():
        path = save_grid(images, per_prompt, out / f"grid_{label}.png")
        figures.append(f"<figure>{image_tag(path, label)}<figcaption>{html.escape(label)}</figcaption></figure>")
    sections = [
        ("Results", html_table(headers, cells) + notes),
        ("Samples (one row per digit 0-9, same initial noise for every model)",
         '<div class="scroll">' + "".join(figures) + "</div>"),
    ]
    if soup:
        points = [(s["rewards"]["classifier"]["mean"], s["rewards"]["ink"]["mean"]) for s in soup]
        front = [i for i, p in enumerate(points)
                 if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
        labels = [f"λ_ink={s['lambda_ink']:g}" for s in soup]
        plot = plot_pareto(points, labels, front, ["classifier", "ink"], out / "soup.png")
        soup_cells = [[lab, f"{p[0]:.3f}", f"{p[1]:.3f}", f"{s['kl']:.1f}", f"{s['diversity']:.2f}"]
                      for lab, p, s in zip(labels, points, soup)]
        sections.append((f"Rewarded soup: {soup_method} tuned on the classifier (λ_ink=0) and on ink (λ_ink=1)",
                         html_table(["weights", "classifier", "ink", "KL", "diversity"], soup_cells)
                         + f"<figure>{image_tag(plot, 'soup Pareto front')}</figure>"))
    (out / "report.html").write_text(html_page(title, sections))
    return table, rows


def _notes(cfg, accuracy: float, timings: dict[str, float], cached: bool) -> str:
    stages = ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    return (f"<p>Classifier reward: p(requested digit) under a logistic regression with held-out accuracy "
            f"{accuracy:.3f} on the real digits. KL: Monte-Carlo estimate over the denoising chain. Diversity: "
            f"mean pairwise L2 distance between images of one digit. ± is the standard error across seeds. "
            f"{cfg.rounds} rounds of {cfg.prompts_per_round}×{cfg.samples_per_prompt} samples, {cfg.num_steps} "
            f"DDIM steps. Time: {html.escape(stages)}{' (DDPM from the cache)' if cached else ''}.</p>")
