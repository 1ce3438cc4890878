"""``alignkit compare`` with diffusion methods: each trained from the digits DDPM, evaluated on one noise, reported.

When the methods of a compare config are diffusion methods (the ``diffusion`` lines of
``alignkit methods``), :func:`alignkit.eval.compare.run_compare` hands its runs here. Every run
(entry x knob value x seed, as for language methods) trains with the diffusion trainer of
``alignkit train`` (:mod:`alignkit.diffusion.train`) into ``OUTPUT_DIR/runs/NAME`` (``budget.max_steps``
is its number of sample-then-train rounds) and is evaluated by
:func:`~alignkit.diffusion.evaluate.evaluate_policy` against the start model:

- each of ``rewards`` (``kind: classifier``, ``ink`` or ``function``; ``eval.rewards`` if given, else the
  compare's, else the training ones; the first one's gain is shown),
  averaged over ``eval.sampling.num_samples`` images per digit drawn from the same initial noise for
  every model;
- ``kl``: the Monte-Carlo KL of the denoising chain to the start model's (nats per image), the cost
  the methods' trust regions bound;
- ``diversity``: the mean pairwise L2 distance between images of one digit (mode collapse lowers it);
- a sample grid per entry (its first seed).

``OUTPUT_DIR/report`` gets ``table.md``, ``table.csv``, ``results.json``, ``grid_<row>.png`` and
``report.html``, laid out as the digits demo's (:func:`~alignkit.diffusion.report.write_diffusion_report`;
± is across seeds). A run whose ``final/`` exists with the same train config is evaluated again
without training. Only the built-in digits model (``base.model.name_or_path: digits``) is
compared this way; a Stable Diffusion pipeline trains with ``alignkit train``.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

from alignkit.config import Config, to_dict
from alignkit.errors import ConfigError
from alignkit.train.methods import method_spec

log = logging.getLogger("alignkit")

DIFFUSION_FAMILY = "diffusion"  # the family the diffusion trainers register under (alignkit.diffusion.train)


def diffusion_runs(train_cfgs: list[tuple]) -> bool:
    """True when every run of a compare trains a diffusion method; a mix of the two kinds is an error."""
    kinds = {method_spec(c.method).family == DIFFUSION_FAMILY for _, c in train_cfgs}
    if len(kinds) > 1:
        raise ConfigError("methods: diffusion and language methods start from different models and cannot be "
                          "compared in one run; put them in two compare configs")
    return kinds == {True}


def check_diffusion_compare(cfg, train_cfgs: list[tuple]) -> int:
    """Config errors before anything trains; returns the images per digit of the evaluation."""
    for _, train_cfg in train_cfgs:
        if train_cfg.model.name_or_path != "digits":
            raise ConfigError(f"base.model.name_or_path: {train_cfg.model.name_or_path!r}; compare evaluates "
                              "diffusion methods on the built-in digits model only (name_or_path: digits)")
        if not train_cfg.rewards:
            raise ConfigError("rewards: give the image rewards to train and evaluate on, e.g. [{kind: classifier}]")
    per_prompt = cfg.eval.sampling.num_samples
    if per_prompt < 2:
        raise ConfigError(f"eval.sampling.num_samples: {per_prompt}; diversity compares images of one digit, "
                          "give at least 2 per digit")
    return per_prompt


def _trained(train_cfg: Config) -> bool:
    """``final/`` exists and was trained with this very config (else it is trained again)."""
    import yaml

    from alignkit.train.run import method_sections

    run_dir = Path(train_cfg.train.output_dir)
    saved = run_dir / "config.yaml"
    if not (run_dir / "final").is_dir() or not saved.is_file():
        return False
    sections = method_sections(train_cfg.method)
    current = {k: v for k, v in to_dict(train_cfg).items() if k in sections}
    return json.loads(json.dumps(yaml.safe_load(saved.read_text()))) == json.loads(json.dumps(current))


def run_diffusion_compare(cfg, train_cfgs: list[tuple]) -> Path:
    """Train (unless trained) and evaluate every run, then write the report; returns the report folder."""
    from diffusers import UNet2DModel

    from alignkit.demo.pipeline import cache_root
    from alignkit.diffusion.digits import (
        NUM_CLASSES,
        PretrainConfig,
        cached_digits_unet,
        digit_rewards,
        digits_policy,
    )
    from alignkit.diffusion.evaluate import evaluate_policy
    from alignkit.diffusion.report import write_diffusion_report
    from alignkit.diffusion.train import image_rewards
    from alignkit.diffusion.trainer import DiffusionTrainConfig, reference_policy
    from alignkit.train.guard import claim_output_dir
    from alignkit.train.run import run_train

    per_prompt = check_diffusion_compare(cfg, train_cfgs)
    num_steps = DiffusionTrainConfig().num_steps
    start, _ = cached_digits_unet(cache_root(SimpleNamespace(cache_dir="")), PretrainConfig(), progress=True)
    start_policy = reference_policy(digits_policy(start.requires_grad_(False)))
    rewards = image_rewards(cfg.eval.rewards or cfg.rewards or train_cfgs[0][1].rewards, digit_rewards(0))

    def evaluate(unet):
        return evaluate_policy(digits_policy(unet), start_policy, rewards, num_prompts=NUM_CLASSES,
                               per_prompt=per_prompt, num_steps=num_steps)

    result, images = evaluate(start)
    runs: dict[str, list[dict]] = {"start": [{**result, "seconds": 0.0}]}
    grids = {"start": images}
    failed: list[str] = []
    for run, train_cfg in train_cfgs:
        label = run.entry.name + (f" {run.setting}" if run.setting else "")
        run_dir = Path(train_cfg.train.output_dir)
        seconds = 0.0  # training time (0 when final/ was reused)
        try:
            if not _trained(train_cfg):
                log.info("%s: training %s", run.name, train_cfg.method)
                claim_output_dir(run_dir, resume=False, overwrite=True)
                t0 = time.perf_counter()
                run_train(train_cfg)
                seconds = time.perf_counter() - t0
            result, images = evaluate(UNet2DModel.from_pretrained(run_dir / "final").eval())
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001  (one failing run must not lose the others)
            log.error("%s failed: %s: %s", run.name, type(err).__name__, err)
            failed.append(f"{run.name}: {type(err).__name__}: {err}")
            continue
        (run_dir / "eval.json").write_text(json.dumps(result, indent=1))
        runs.setdefault(label, []).append({**result, "seconds": seconds, "seed": run.seed})
        grids.setdefault(label, images)
    notes = (f"<p>Rewards: mean over {per_prompt} images per digit, the same initial noise for every model. KL: "
             f"Monte-Carlo estimate over the {num_steps}-step denoising chain, nats per image. Diversity: mean "
             "pairwise L2 distance between images of one digit. ± is the standard error across seeds.</p>"
             + "".join(f"<p>failed: {html.escape(f)}</p>" for f in failed))
    out = Path(cfg.output_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    write_diffusion_report(out, runs, grids, per_prompt, notes, extra={"failed": failed},
                           title=f"alignkit compare: {Path(cfg.output_dir).name}")
    return out
