"""Human choices as D3PO / Diffusion-DPO feedback: show pairs to people, read their choices from a file.

The workflow (no reward model anywhere):

1. ``pair_writer(folder)`` as the labeller of a one-round run writes every pair it is asked about as
   ``pair_<n>_a.png`` / ``pair_<n>_b.png`` plus ``pairs.jsonl`` (``{"pair": n, "prompt": id}``), and
   answers "a" so that the run can finish; the run is a dry run whose chains are discarded.
2. A person writes ``choices.jsonl``: one line per pair, in order, ``{"pair": n, "preferred": "a"}``
   (or ``"b"``).
3. ``choices_labeller(path)`` as the labeller of the same run (same start model, same seed, so the
   same chains are sampled) trains on those choices.

Sampling is seeded, so a round's pairs are reproduced exactly; label one round at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignkit.diffusion.trainer import Labeller
from alignkit.errors import DataError


def pair_writer(folder: str | Path) -> Labeller:
    """A labeller that saves each pair as two PNGs for a person to judge, and answers "a"."""
    from alignkit.diffusion.digits import as_numpy_grid
    from alignkit.eval.report import _pyplot

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "pairs.jsonl"
    index.write_text("")
    count = [0]

    def label(images_a: torch.Tensor, images_b: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        for img_a, img_b, prompt in zip(images_a, images_b, ids.tolist()):
            n = count[0]
            for side, img in (("a", img_a), ("b", img_b)):
                picture = as_numpy_grid(img[:1][None], 1) if img.shape[0] == 1 else \
                    ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
                _pyplot().imsave(out / f"pair_{n}_{side}.png", picture, cmap="gray_r", vmin=0.0, vmax=1.0)
            with index.open("a") as f:
                f.write(json.dumps({"pair": n, "prompt": prompt}) + "\n")
            count[0] += 1
        return torch.ones(len(ids), dtype=torch.bool)

    return label


def read_choices(path: str | Path) -> list[bool]:
    """``choices.jsonl`` -> one bool per pair (True: "a" preferred); errors name FILE:LINE."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such choices file (one line per pair: {{\"pair\": 0, \"preferred\": \"a\"}})")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not JSON ({err.msg})") from None
        choice = row.get("preferred") if isinstance(row, dict) else None
        if choice not in ("a", "b"):
            raise DataError(f"{path}:{number}: 'preferred' must be \"a\" or \"b\", got {choice!r}")
        if row.get("pair", len(out)) != len(out):
            raise DataError(f"{path}:{number}: pair {row.get('pair')!r} out of order; expected pair {len(out)}")
        out.append(choice == "a")
    return out


def choices_labeller(path: str | Path) -> Labeller:
    """A labeller answering from a file of human choices, pair after pair."""
    choices = read_choices(path)
    position = [0]

    def label(images_a: torch.Tensor, images_b: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        start, stop = position[0], position[0] + len(ids)
        if stop > len(choices):
            raise DataError(f"{path}: {len(choices)} choices, but the run asks about pair {stop - 1}; "
                            "label every pair the dry run wrote")
        position[0] = stop
        return torch.tensor(choices[start:stop])

    return label
