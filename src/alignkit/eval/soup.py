"""``alignkit soup``: rewarded soups (Rame et al. 2023, https://arxiv.org/abs/2306.04488).

N models fine-tuned from ONE start, each on its own reward, are interpolated in weight
space, ``theta(lambda) = sum_i lambda_i * theta_i`` for every ``lambda`` of
:func:`~alignkit.eval.metrics.simplex_grid` (entries in {0, 1/steps, ..., 1}, summing to 1).
Every reward is evaluated for every soup; the report gives the table (``soup.csv``,
``soup.md``), the Pareto-optimal soups, the front plot (reward 1 against reward 2, each
point labelled with its lambda), and for a user preference ``mu`` the soup maximising
``sum_i mu_i R_i``. A chosen soup can be saved as a loadable model.

What is interpolated (``soup.interpolate``):

- ``weights`` (default): the full weights of each model folder. A LoRA run's ``final/``
  adapter is loaded merged into the base (``W0 + B_i A_i``), so this interpolates the
  merged weights: ``W0 + sum_i lambda_i B_i A_i``, exactly the interpolation of the
  weight updates. Holds the N models' weights in CPU memory.
- ``adapter``: the LoRA matrices themselves, ``A = sum_i lambda_i A_i`` and
  ``B = sum_i lambda_i B_i``, from the adapter in ``final/`` (as the rewarded-soups code does for
  LLaMA: ``WeightAverager`` in ``llama/utils/inference_utils.py``). Only the adapters are
  held in memory, but the update ``B A`` is then not linear in lambda (cross terms
  ``lambda_i lambda_j B_i A_j``). The base is ``base_model`` (default: the adapter's record).

All models must share the architecture (model type, parameter names and shapes; for
adapters also rank, alpha and target modules); a mismatch is an :class:`AlignkitError`
naming the model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from alignkit.config.rewards import RewardSpec
from alignkit.errors import AlignkitError, ConfigError
from alignkit.eval.runner import EvalConfig
from alignkit.eval.soup_train import SoupTrainSection

log = logging.getLogger("alignkit")


@dataclass
class SoupSection:
    steps: int = 10  # grid resolution: every lambda with entries in {0, 1/steps, ..., 1} summing to 1
    interpolate: Literal["weights", "adapter"] = (
        "weights"  # full (merged) weights, or the LoRA A and B matrices
    )
    preference: list[float] = field(
        default_factory=list
    )  # mu, one weight per reward: report argmax sum_i mu_i R_i
    save_lambda: list[float] = field(
        default_factory=list
    )  # the soup to save (default: the best for `preference`)
    save: str = ""  # folder to save the chosen soup to, loadable with from_pretrained (empty: save nothing)


@dataclass
class SoupConfig:
    models: list[str] = field(
        default_factory=list
    )  # N run folders, final/ folders or saved models, one start (empty with train.start: trained here)
    base_model: str = (
        ""  # interpolate=adapter: the model the adapters were trained on (default: their record)
    )
    rewards: list[RewardSpec] = field(
        default_factory=list
    )  # evaluated for every soup; the first two are the plot axes
    eval: EvalConfig = field(
        default_factory=EvalConfig
    )  # prompts, sampling, ... (model, rewards, output_dir set per soup)
    soup: SoupSection = field(default_factory=SoupSection)
    train: SoupTrainSection = field(default_factory=SoupTrainSection)  # train the models (one per reward)
    # and the MORL baseline from train.start, cached and resumable like compare (see alignkit.eval.soup_train)
    threads: int = 0  # torch CPU threads of the whole command (0: torch's default; 1 suits a tiny model on a
    # busy CPU, where more threads wait on each other)
    output_dir: str = "runs/soup"  # soup.csv, soup.md, soup.json, pareto_front.png, soups/LAMBDA/ samples


# ---------------------------------------------------------------- weights


def model_folder(path: str) -> str:
    """A run folder means its ``final/``; anything else is used as given."""
    final = Path(path) / "final"
    return str(final) if final.is_dir() else path


def adapter_folder(path: str) -> Path:
    for candidate in (Path(path), Path(path) / "final", Path(path) / "adapter", Path(path) / "final" / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise AlignkitError(
        f"soup: model {path} has no LoRA adapter (adapter_config.json in it, final/, adapter/ or "
        "final/adapter/); use soup.interpolate: weights"
    )


def mix(states: list[dict[str, torch.Tensor]], lambdas: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """``sum_i lambdas[i] * states[i]`` for floating tensors (in fp32); other tensors from the first."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum(lam * s[key].float() for lam, s in zip(lambdas, states))
            out[key] = acc.to(first.dtype)
        else:
            out[key] = first
    return out


def check_same_shapes(name: str, state: dict, first_name: str, first: dict) -> None:
    """AlignkitError naming ``name`` when its tensors differ from ``first``'s in names or shapes."""
    missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has an extra {extra[0]}"
        raise AlignkitError(f"soup: model {name} does not share the architecture of {first_name}: it {what}")
    for key, value in first.items():
        if state[key].shape != value.shape:
            raise AlignkitError(
                f"soup: model {name} does not share the architecture of {first_name}: "
                f"{key} has shape {tuple(state[key].shape)}, not {tuple(value.shape)}"
            )


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class WeightSoup:
    """Full-weight soups: one container model, N state dicts on the CPU."""

    def __init__(self, paths: list[str], ev: EvalConfig):
        from alignkit.eval.runner import load_model

        self.model, self.tokenizer = load_model(paths[0], ev)
        self.states = [_cpu_state(self.model)]
        kind = type(self.model).__name__
        for path in paths[1:]:
            try:
                other, _ = load_model(path, ev)
            except AlignkitError as err:
                raise AlignkitError(f"soup: model {path} could not be loaded: {err}") from None
            if type(other).__name__ != kind:
                raise AlignkitError(
                    f"soup: model {path} is a {type(other).__name__}, not a {kind} like {paths[0]}"
                )
            self.states.append(_cpu_state(other))
            check_same_shapes(path, self.states[-1], paths[0], self.states[0])
            del other

    def set(self, lambdas: tuple[float, ...]):
        self.model.load_state_dict(mix(self.states, lambdas))
        return self.model


class AdapterSoup:
    """LoRA-matrix soups: the base model with one adapter whose A and B are interpolated."""

    CHECKED = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora")

    def __init__(self, paths: list[str], base_model: str, ev: EvalConfig):
        from peft import PeftModel
        from safetensors.torch import load_file

        from alignkit.eval.runner import load_model

        dirs = [adapter_folder(p) for p in paths]
        configs = [json.loads((d / "adapter_config.json").read_text()) for d in dirs]
        for path, c in zip(paths[1:], configs[1:]):
            for key in self.CHECKED:
                if _norm(c.get(key)) != _norm(configs[0].get(key)):
                    raise AlignkitError(
                        f"soup: model {path} does not share the adapter architecture of {paths[0]}: "
                        f"{key} is {c.get(key)!r}, not {configs[0].get(key)!r}"
                    )
        base = base_model or configs[0].get("base_model_name_or_path") or ""
        if not base:
            raise ConfigError("base_model: the adapters do not record their base model; set base_model")
        model, self.tokenizer = load_model(base, ev)
        self.model = PeftModel.from_pretrained(model, str(dirs[0])).eval()
        self.states = [load_file(str(d / "adapter_model.safetensors")) for d in dirs]
        for path, state in zip(paths[1:], self.states[1:]):
            check_same_shapes(path, state, paths[0], self.states[0])

    def set(self, lambdas: tuple[float, ...]):
        from peft import set_peft_model_state_dict

        device = next(self.model.parameters()).device
        set_peft_model_state_dict(self.model, {k: v.to(device) for k, v in mix(self.states, lambdas).items()})
        return self.model


def _norm(value):
    return sorted(value) if isinstance(value, list) else value


# ---------------------------------------------------------------- the command


def lambda_label(lambdas: tuple[float, ...]) -> str:
    return "/".join(f"{x:g}" for x in lambdas)


def check_soup(cfg: SoupConfig) -> None:
    from alignkit.eval.soup_train import check_train

    if not cfg.rewards:
        raise ConfigError("rewards: give the rewards to evaluate every soup on (e.g. one per model)")
    if cfg.train.start:
        check_train(cfg)
        if len(cfg.rewards) < 2:
            raise ConfigError("rewards: train.start trains one model per reward, and a soup needs at least 2")
    elif len(cfg.models) < 2:
        raise ConfigError("models: a soup needs at least 2 models (or give train.start and one reward per model)")
    n_models = len(cfg.models) or len(cfg.rewards)
    if cfg.threads < 0:
        raise ConfigError(f"threads: {cfg.threads}; give a number of CPU threads (0: torch's default)")
    if cfg.soup.steps < 1:
        raise ConfigError("soup.steps: must be at least 1")
    if cfg.soup.preference and len(cfg.soup.preference) != len(cfg.rewards):
        raise ConfigError(
            f"soup.preference: give one weight per reward ({len(cfg.rewards)}), "
            f"got {len(cfg.soup.preference)}"
        )
    lam = cfg.soup.save_lambda
    if lam and (len(lam) != n_models or abs(sum(lam) - 1.0) > 1e-6):
        raise ConfigError(
            f"soup.save_lambda: give one weight per model ({n_models}) summing to 1, got {lam}"
        )
    if cfg.soup.save and not (lam or cfg.soup.preference):
        raise ConfigError("soup.save: say which soup to save with soup.save_lambda or soup.preference")


def run_soup(cfg: SoupConfig, config_path: str = "the config") -> Path:
    """Train the models when ``train.start`` is set (unless finished earlier), evaluate every soup of the grid,
    write the report, save the chosen soup; returns output_dir."""
    check_soup(cfg)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_soup(cfg, config_path)
    finally:
        torch.set_num_threads(threads)  # the caller's setting again (the Python API, tests)


def _run_soup(cfg: SoupConfig, config_path: str) -> Path:
    from alignkit.eval.metrics import best_for_preference, pareto_front, simplex_grid
    from alignkit.eval.runner import evaluate_model, load_model
    from alignkit.eval.soup_train import missing_message, missing_models, train_runs, with_demo_paths

    cfg = with_demo_paths(cfg)
    out = Path(cfg.output_dir)
    ev = replace(cfg.eval, rewards=list(cfg.rewards))
    trained = None
    if cfg.train.start:
        trained = train_runs(cfg)
        cfg = replace(cfg, models=trained.models)
        # evaluated as compare evaluated the runs: against the start, with the training seed
        ev = replace(ev, reference=ev.reference or trained.reference,
                     sampling=replace(ev.sampling, seed=cfg.train.seed))
    else:
        missing = missing_models(cfg.models)
        if missing:
            raise AlignkitError(missing_message(missing, config_path))
    out.mkdir(parents=True, exist_ok=True)
    paths = [model_folder(p) for p in cfg.models]
    if cfg.soup.interpolate == "adapter":
        soup = AdapterSoup(cfg.models, cfg.base_model, ev)
    else:
        soup = WeightSoup(paths, ev)
    reference = load_model(ev.reference, ev, soup.tokenizer)[0] if ev.reference else None
    grid = simplex_grid(len(paths), cfg.soup.steps)
    results = []
    for lambdas in grid:
        label = lambda_label(lambdas)
        log.info("soup lambda = %s", label)
        run_ev = replace(ev, model=f"soup {label}", output_dir=str(out / "soups" / label.replace("/", "_")))
        results.append(evaluate_model(run_ev, soup.set(lambdas), soup.tokenizer, reference))
    names = list(results[0]["rewards"])
    points = [[r["rewards"][n]["mean"] for n in names] for r in results]
    front = pareto_front(points)
    best = best_for_preference(points, cfg.soup.preference) if cfg.soup.preference else None
    summary = {
        "models": paths,
        "interpolate": cfg.soup.interpolate,
        "rewards": names,
        "soups": [
            {
                "lambda": list(lam),
                "rewards": r["rewards"],
                "pareto_optimal": i in front,
                **({"kl": r["kl"]} if "kl" in r else {}),
            }
            for i, (lam, r) in enumerate(zip(grid, results))
        ],
        "pareto_front": [list(grid[i]) for i in front],
    }
    if best is not None:
        summary["preference"] = {
            "mu": cfg.soup.preference,
            "lambda": list(grid[best]),
            "rewards": dict(zip(names, points[best])),
        }
    if cfg.soup.save:
        lambdas = tuple(cfg.soup.save_lambda) if cfg.soup.save_lambda else grid[best]
        summary["saved"] = {"lambda": list(lambdas), "path": str(save_soup(soup, lambdas, cfg.soup.save))}
    if len(paths) == 2 and len(names) >= 2:
        summary["experiment"] = experiment_report(out, cfg, grid, results, trained)
    write_soup_report(out, summary, grid, results, front, best)
    return out


def experiment_report(out: Path, cfg: SoupConfig, grid, results: list[dict], trained) -> dict:
    """Two models: both fronts (with the MORL runs when trained), the LMC check and the cost (soup_report)."""
    from alignkit.eval.runner import read_samples
    from alignkit.eval.soup_report import Experiment, Point, per_prompt, write_experiment_report

    names = list(results[0]["rewards"])[:2]

    def point(label: str, samples: list[dict], result: dict | None, steps: int = 0) -> Point:
        kl = (result or {}).get("kl", {}).get("mean")
        return Point(label, {n: per_prompt(samples, n) for n in names}, kl, steps)

    soups = [point(f"λ={lam[0]:g}", read_samples(out / "soups" / lambda_label(lam).replace("/", "_") / "samples.jsonl"),
                   r) for lam, r in zip(grid, results)]
    morl, start, steps = [], None, [0, 0]
    if trained is not None:
        ends = [point(f"μ={mu:g}", row.samples, row.result, trained.steps[row.label])
                for mu, row in zip((0.0, 1.0), trained.ingredients)]
        inner = [(mu, point(f"μ={mu:g}", row.samples, row.result, trained.steps[row.label]))
                 for mu, row in trained.morl]
        morl = [(0.0, ends[0]), *inner, (1.0, ends[1])] if inner else []
        start = point("start", trained.start.samples, trained.start.result)
        steps = [p.steps for p in ends]
    exp = Experiment(names, soups, [lam[0] for lam in grid], morl, start, steps)
    return write_experiment_report(out, exp, f"alignkit soup: {out.name}")


def save_soup(soup, lambdas: tuple[float, ...], folder: str) -> Path:
    """The soup with ``lambdas`` in HF format (an adapter soup as its adapter, merged under merged/)."""
    from alignkit.models.loading import save_pretrained

    path = save_pretrained(soup.set(lambdas), soup.tokenizer, folder, save_merged=True)
    (path / "soup.json").write_text(json.dumps({"lambda": list(lambdas)}) + "\n")
    log.info("saved the soup lambda = %s to %s", lambda_label(lambdas), path)
    return path


def write_soup_report(out: Path, summary: dict, grid, results, front: list[int], best: int | None) -> None:
    from alignkit.eval.report import markdown_table, plot_pareto, write_csv
    from alignkit.eval.runner import json_safe

    names = summary["rewards"]
    rows = []
    for i, (lambdas, r) in enumerate(zip(grid, results)):
        row = {f"lambda_{j + 1}": lam for j, lam in enumerate(lambdas)}
        for n in names:
            row[f"reward/{n}"] = r["rewards"][n]["mean"]
            row[f"reward/{n}_se"] = r["rewards"][n]["stderr"]
        if "kl" in r:
            row["kl"] = r["kl"]["mean"]
        row["pareto_optimal"] = i in front
        row["best_for_preference"] = i == best
        rows.append(row)
    write_csv(out / "soup.csv", rows)
    headers = [
        "lambda",
        *(f"{n} ± se" for n in names),
        *(["KL"] if "kl" in results[0] else []),
        "Pareto",
        "best",
    ]
    cells = [
        [
            lambda_label(lam),
            *(_pm(r["rewards"][n]) for n in names),
            *([f"{r['kl']['mean']:.3f}"] if "kl" in r else []),
            "yes" if i in front else "",
            "<- mu" if i == best else "",
        ]
        for i, (lam, r) in enumerate(zip(grid, results))
    ]
    text = markdown_table(headers, cells)
    if "preference" in summary:
        p = summary["preference"]
        text += f"\nBest for preference mu = {p['mu']}: lambda = {lambda_label(tuple(p['lambda']))}\n"
    if "saved" in summary:
        text += f"Saved lambda = {lambda_label(tuple(summary['saved']['lambda']))} to {summary['saved']['path']}\n"
    (out / "soup.md").write_text(text)
    if len(names) >= 2:
        points = [(r["rewards"][names[0]]["mean"], r["rewards"][names[1]]["mean"]) for r in results]
        labels = [f"λ1={lam[0]:g}" if len(lam) == 2 else f"λ={lambda_label(lam)}" for lam in grid]
        summary["plot"] = str(plot_pareto(points, labels, front, names[:2], out / "pareto_front.png", best))
    (out / "soup.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")


def _pm(stats: dict) -> str:
    mean, se = stats.get("mean"), stats.get("stderr")
    if mean is None:
        return "—"
    return f"{mean:.3f}" + (f" ± {se:.3f}" if se is not None else "")
