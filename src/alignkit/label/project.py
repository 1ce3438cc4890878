"""A labelling project: one YAML file, loaded into :class:`ProjectConfig` (unknown keys are errors).

Example ``project.yaml``::

    data: samples.jsonl            # what `alignkit generate` wrote, or any ranked / pairwise /
                                   # qa-feedback / sft file alignkit reads (relative to this file)
    tasks: [rank, choose, rate, spans]
    annotators_per_item: 2

Paths are relative to the project file; the database defaults to ``PROJECT.sqlite`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignkit.config import load_config
from alignkit.errors import ConfigError

# Fine-Grained RLHF (Wu et al. 2023) error categories, as the qa-feedback data spells them:
# irrelevant or redundant, incorrect (wrongly grounded) or unverifiable fact, incoherent.
FINE_GRAINED_ERRORS = ["Irrelevant", "Redundant", "Wrong-Grounding", "Unverifiable", "Incoherent"]
FINE_GRAINED_MISSING = ["Missing-Answer", "Missing-Major-Auxiliary", "Missing-Minor-Auxiliary"]
# InstructGPT (Ouyang et al. 2022, Table 3) metadata that labellers flagged on each output.
INSTRUCTGPT_FLAGS = [
    "Fails to follow the instruction",
    "Hallucination",
    "Inappropriate for a customer assistant",
    "Sexual content",
    "Violent content",
    "Harmful advice",
    "Denigrates a protected class",
]


@dataclass
class ProjectConfig:
    data: str = ""  # the items: `alignkit generate` output or any ranked/pairwise/qa-feedback/sft file
    format: str = "auto"  # the data format (auto detects it, as data.format in a training config)
    max_items: int = 0  # import only the first max_items rows (0: all)
    skip_bad_rows: bool = False  # leave out rows alignkit cannot read (e.g. an empty sampled response), counted
    tasks: list[str] = field(default_factory=lambda: ["rank"])  # task pages: rank, choose, rate, spans
    annotators_per_item: int = 2  # how many annotators see each item, per task
    database: str = ""  # SQLite file of items and labels (default: PROJECT.sqlite beside the YAML)
    host: str = "127.0.0.1"  # interface to listen on (0.0.0.0 lets other machines in)
    port: int = 8765  # TCP port
    public_url: str = ""  # base of the annotator URLs that add-annotator prints (default http://host:port)
    seed: int = 0  # picks the two responses of each choose item
    span_response: int = 1  # the response (1-based) whose spans the spans task marks
    error_categories: list[str] = field(default_factory=lambda: list(FINE_GRAINED_ERRORS))  # span labels
    missing_categories: list[str] = field(default_factory=lambda: list(FINE_GRAINED_MISSING))  # missing info
    failure_flags: list[str] = field(default_factory=lambda: list(INSTRUCTGPT_FLAGS))  # rate-task flags


@dataclass
class Project:
    """A loaded project: its config and the paths resolved against the project file."""

    config: ProjectConfig
    path: Path
    data_path: Path
    database_path: Path

    @property
    def url(self) -> str:
        return (self.config.public_url or f"http://{self.config.host}:{self.config.port}").rstrip("/")


MAX_CATEGORIES = 9  # keys 1-9 pick a category in the browser


def load_project(path: str | Path, overrides: list[str] | None = None) -> Project:
    """Read and check ``PROJECT.yaml``; every problem is a :class:`ConfigError` naming the key."""
    from alignkit.label.tasks import TASKS

    path = Path(path)
    cfg: ProjectConfig = load_config(path, overrides, cls=ProjectConfig)
    where = str(path)
    if not cfg.data:
        raise ConfigError(f"{where}: data: give the file of items to label (e.g. what alignkit generate wrote)")
    if not cfg.tasks:
        raise ConfigError(f"{where}: tasks: give at least one of {', '.join(TASKS)}")
    for name in cfg.tasks:
        if name not in TASKS:
            raise ConfigError(f"{where}: tasks: unknown task {name!r}; choose from {', '.join(TASKS)}")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError(f"{where}: tasks: a task is listed twice")
    if cfg.annotators_per_item < 1:
        raise ConfigError(f"{where}: annotators_per_item must be at least 1, got {cfg.annotators_per_item}")
    if cfg.span_response < 1:
        raise ConfigError(f"{where}: span_response is 1-based, got {cfg.span_response}")
    if not 1 <= cfg.port <= 65535:
        raise ConfigError(f"{where}: port must be in 1-65535, got {cfg.port}")
    for key in ("error_categories", "missing_categories", "failure_flags"):
        values = getattr(cfg, key)
        if not values or len(values) > MAX_CATEGORIES or len(set(values)) != len(values) or not all(
            v.strip() for v in values
        ):
            raise ConfigError(f"{where}: {key} needs 1 to {MAX_CATEGORIES} different non-empty names")
    base = path.resolve().parent
    data_path = (base / cfg.data).resolve()
    database = (base / cfg.database).resolve() if cfg.database else path.resolve().with_suffix(".sqlite")
    return Project(cfg, path, data_path, database)
