"""``alignkit demo --task digits``: align a class-conditional digits DDPM with every diffusion method.

Stages, each timed:

1. ``pretrain``: the class-conditional DDPM on scikit-learn's digits (:mod:`alignkit.diffusion.digits`),
   cached under ``<cache>/digits/<key>/`` (a second run loads it);
2. ``rewards``: the digit classifier (reward: p(requested digit)) and the ink-mass reward;
3. ``methods``: every method of ``methods`` trains a copy of the start model on the classifier reward
   (RAFT, DDPO) or on pairs labelled by comparing it (D3PO, Diffusion-DPO: the labeller sees two images
   and says which is the better digit; no reward model is trained), once per seed, then is evaluated on
   the same fixed noise as the start model (:mod:`alignkit.diffusion.evaluate`);
4. ``soup``: ``soup_method`` trained on the ink reward as well, and the two tuned models' weights mixed
   at ``soup_lambdas`` (rewarded soups, Rame et al. 2023), each mix scored on both rewards;
5. the report (:mod:`alignkit.diffusion.report`): the table (mean over seeds ± standard error across
   seeds), a sample grid per model and the soup's Pareto plot, in one HTML page.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignkit.diffusion.registry import (
    DIFFUSION_METHODS,
    check_diffusion_hyperparameters,
    get_diffusion_method,
)

log = logging.getLogger("alignkit")


@dataclass
class DigitsDemoConfig:
    output_dir: str = "runs/demo_digits"  # results.json, table.md, grids and report.html
    cache_dir: str = ""  # the pretrained DDPM's cache (default: the language demo's cache root)
    seed: int = 0  # first training seed; seeds seed .. seed + seeds - 1 train every method (the DDPM and the
    # classifier are seeded 0 whatever the seed, so every run starts from the same model)
    seeds: int = 1  # training seeds per method (the table's ± is across them)
    methods: list[str] = field(default_factory=lambda: sorted(DIFFUSION_METHODS))  # compared methods
    pretrain_steps: int = 1000  # DDPM optimizer steps of 64 digits
    rounds: int = 6  # sample-then-train rounds per method
    prompts_per_round: int = 16  # digits sampled per round
    samples_per_prompt: int = 4  # K images per digit and round
    num_steps: int = 10  # DDIM steps (eta = 1) when training and evaluating
    learning_rate: float = 1e-4  # AdamW learning rate of every method
    hparams: dict[str, dict] = field(default_factory=lambda: {  # per-method hyper-parameters for this toy scale
        "ddpo": {"clip_range": 0.01},  # the paper's 1e-4 clipped ~95% of steps after the first update here
        "d3po": {"beta": 20.0, "clip": 0.01},  # per-pixel log-ratios are ~1e-3 a step: beta 0.1 left the loss at
        # log 2; the authors' clip of 0.1 never bound here, and the last, low-noise steps (sigma ~0.03), whose
        # log-prob gradients are largest and carry least of the preference, drifted (KL 80, no gain on seed 0)
        "diffusion_dpo": {"beta": 500.0},  # SD's 5000 made pixel-space margins swing by +-8
        "diffusion_raft": {"anchor": 4.0},  # without the pull to the start model, fine-tuning on its own 10-step
        # samples taught their artifacts (KL 113, reward below the start model); chosen on seeds 10 and 11
    })
    epochs: dict[str, int] = field(default_factory=lambda: {  # passes over a round's data per method (default 1)
        "diffusion_raft": 8,  # RAFT's E: one optimizer step a round (16 kept images) left the anchored model
        # near the start model (+0.004); eight fit the kept images at KL ~14
    })
    batch_size: int = 16  # examples per optimizer step
    eval_per_prompt: int = 16  # evaluation images per digit
    soup_method: str = "ddpo"  # method tuned on each reward for the soup ("" skips the soup)
    soup_lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # ink model's weight
    threads: int = 0  # torch CPU threads (0: one; the 0.65M-parameter UNet on 8x8 images gains nothing from
    # more, and two threads on this shared 2-core machine ran a pretraining step 8-16x slower than one)
    progress: bool = True  # log each round


@dataclass
class DigitsDemoResult:
    report_dir: Path
    table: str  # markdown table
    rows: dict[str, dict]  # label -> aggregated metrics
    timings: dict[str, float]
    cached: bool  # the pretrained DDPM came from the cache


def _train_one(start, method: str, reward, labeller, cfg: DigitsDemoConfig, seed: int, progress: bool):
    from alignkit.diffusion.digits import NUM_CLASSES, digits_policy
    from alignkit.diffusion.trainer import DiffusionTask, DiffusionTrainConfig, train_diffusion

    unet = copy.deepcopy(start)
    task = DiffusionTask(digits_policy(unet), NUM_CLASSES, reward=reward, labeller=labeller)
    train_cfg = DiffusionTrainConfig(method=method, hparams=dict(cfg.hparams.get(method, {})), rounds=cfg.rounds,
                                     epochs=cfg.epochs.get(method, 1), prompts_per_round=cfg.prompts_per_round,
                                     samples_per_prompt=cfg.samples_per_prompt, num_steps=cfg.num_steps,
                                     learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=seed)
    history = train_diffusion(task, train_cfg, progress=progress)
    return unet, history


def _evaluate(unet, start_policy, rewards, cfg: DigitsDemoConfig):
    from alignkit.diffusion.digits import NUM_CLASSES, digits_policy
    from alignkit.diffusion.evaluate import evaluate_policy

    return evaluate_policy(digits_policy(unet), start_policy, rewards, num_prompts=NUM_CLASSES,
                           per_prompt=cfg.eval_per_prompt, num_steps=cfg.num_steps)


def run_digits_demo(cfg: DigitsDemoConfig) -> DigitsDemoResult:
    from alignkit.demo.pipeline import cache_root
    from alignkit.diffusion.digits import PretrainConfig, cached_digits_unet, digit_rewards, digits_policy
    from alignkit.diffusion.report import write_digits_report
    from alignkit.diffusion.trainer import reference_policy, reward_labeller
    from alignkit.eval.soup import mix

    for method in cfg.methods:
        check_diffusion_hyperparameters(method, cfg.hparams.get(method, {}), key=f"hparams.{method}")
    if cfg.soup_method:
        get_diffusion_method(cfg.soup_method)
    torch.set_num_threads(cfg.threads or 1)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    start, cached = cached_digits_unet(cache_root(cfg), PretrainConfig(steps=cfg.pretrain_steps),
                                       progress=cfg.progress)
    start.requires_grad_(False)
    timings["pretrain"] = 0.0 if cached else time.perf_counter() - t0
    t0 = time.perf_counter()
    rewards = digit_rewards(0)
    classifier = rewards["classifier"]
    labeller = reward_labeller(classifier)  # stands in for a person comparing two images
    timings["rewards"] = time.perf_counter() - t0
    start_policy = reference_policy(digits_policy(start))

    runs: dict[str, list[dict]] = {}
    grids: dict[str, torch.Tensor] = {}
    result, images = _evaluate(start, start_policy, rewards, cfg)
    runs["start"] = [{**result, "seconds": 0.0}]
    grids["start"] = images
    tuned: dict[str, torch.nn.Module] = {}
    t0 = time.perf_counter()
    for method in cfg.methods:
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            t_method = time.perf_counter()
            unet, history = _train_one(start.requires_grad_(True), method, classifier, labeller, cfg, seed,
                                       cfg.progress)
            seconds = time.perf_counter() - t_method
            result, images = _evaluate(unet, start_policy, rewards, cfg)
            runs.setdefault(method, []).append({**result, "seconds": seconds, "seed": seed, "history": history})
            log.info("digits demo: %s seed %d: classifier %.3f ink %.3f kl %.1f diversity %.2f (%.0fs)", method, seed,
                     result["rewards"]["classifier"]["mean"], result["rewards"]["ink"]["mean"], result["kl"],
                     result["diversity"], seconds)
            if seed == cfg.seed:
                grids[method] = images
                tuned[method] = unet
    timings["methods"] = time.perf_counter() - t0

    soup: list[dict] = []
    if cfg.soup_method:
        t0 = time.perf_counter()
        clf_model = tuned.get(cfg.soup_method) or _train_one(start.requires_grad_(True), cfg.soup_method, classifier,
                                                             labeller, cfg, cfg.seed, cfg.progress)[0]
        ink_model, _ = _train_one(start.requires_grad_(True), cfg.soup_method, rewards["ink"],
                                  reward_labeller(rewards["ink"]), cfg, cfg.seed, cfg.progress)
        states = [clf_model.state_dict(), ink_model.state_dict()]
        souped = copy.deepcopy(start)
        for lam in cfg.soup_lambdas:
            souped.load_state_dict(mix(states, (1 - lam, lam)))
            result, _ = _evaluate(souped, start_policy, rewards, cfg)
            soup.append({"lambda_ink": lam, **result})
        timings["soup"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    table, rows = write_digits_report(out, runs, grids, soup, timings, cfg, classifier.held_out_accuracy, cached)
    return DigitsDemoResult(out, table, rows, timings, cached)
