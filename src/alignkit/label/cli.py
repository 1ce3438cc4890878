"""``alignkit label``: collect rankings, choices, ratings and error spans from people in a browser.

    alignkit label serve PROJECT.yaml [key=value ...]       # the web app (127.0.0.1:8765 by default)
    alignkit label add-annotator PROJECT.yaml NAME          # prints NAME's personal URL
    alignkit label stats PROJECT.yaml                       # agreement per task and annotator
    alignkit label export PROJECT.yaml -f ranked -o out.jsonl [--task rank] [--per-annotator]

See docs/label.md for the whole loop from ``alignkit generate`` to ``alignkit train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignkit.cli import command

ACTIONS = {}


def _action(name: str, help_text: str):
    def wrap(fn):
        ACTIONS[name] = (help_text, fn)
        return fn

    return wrap


def _project(args: argparse.Namespace):
    from alignkit.label.importer import open_project
    from alignkit.label.project import load_project

    project = load_project(args.project, getattr(args, "overrides", []))
    return project, open_project(project)


@_action("serve", "start the labelling web app")
def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from alignkit.label.app import create_app

    project, store = _project(args)
    cfg = project.config
    print(f"{store.item_count()} items in {project.database_path}; tasks: {', '.join(cfg.tasks)}")
    print(f"serving on http://{cfg.host}:{cfg.port} (annotators open the URL add-annotator printed; Ctrl+C stops)")
    if not store.annotators():
        print(f"no annotators yet: alignkit label add-annotator {args.project} NAME")
    uvicorn.run(create_app(project, store), host=cfg.host, port=cfg.port, log_level="warning")
    return 0


@_action("add-annotator", "register an annotator and print their personal URL (a new one replaces the old)")
def _add_annotator(args: argparse.Namespace) -> int:
    project, store = _project(args)
    token = store.add_annotator(args.name)
    print(f"{project.url}/login/{token}")
    return 0


@_action("stats", "agreement per task (Krippendorff's alpha, pairwise, span F1), per annotator, disagreements")
def _stats(args: argparse.Namespace) -> int:
    from alignkit.label.stats import format_stats, task_stats

    project, store = _project(args)
    print(format_stats([task_stats(store, project, t) for t in project.config.tasks], store.flagged()))
    for name in store.annotators():
        done = {t: store.progress(name, t, project.config.annotators_per_item) for t in project.config.tasks}
        print(f"progress {name}: " + ", ".join(f"{t} {p['done']} done/{p['skipped']} skipped/{p['left']} left"
                                             for t, p in done.items()))
    return 0


@_action("export", "write the labels as ranked or pairwise jsonl, or qa-feedback json, ready for alignkit train")
def _export(args: argparse.Namespace) -> int:
    from alignkit.label.export import export_rows, write_rows

    project, store = _project(args)
    rows = export_rows(store, project, args.format, args.task, args.per_annotator)
    out = Path(args.output)
    write_rows(rows, out, args.format)
    print(f"{len(rows)} {args.format} rows -> {out}")
    return 0


def _args(p: argparse.ArgumentParser) -> None:
    from alignkit.label.export import EXPORT_FORMATS

    sub = p.add_subparsers(dest="label_action", metavar="ACTION", required=True)
    for name, (help_text, fn) in ACTIONS.items():
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("project", help="the project's YAML file")
        if name == "add-annotator":
            q.add_argument("name", help="the annotator's name (letters, digits, _ . -)")
        if name == "export":
            q.add_argument("-f", "--format", required=True, choices=EXPORT_FORMATS)
            q.add_argument("-o", "--output", required=True, help="file to write")
            q.add_argument("--task", default=None, help="the task whose labels to export (default: the first that fits)")
            q.add_argument("--per-annotator", action="store_true", help="one row per annotator instead of aggregated")
        q.add_argument("overrides", nargs="*", metavar="key=value", help="override a project key")
        q.set_defaults(label_run=fn)


@command("label", "collect human feedback in the browser (rank, choose, rate, mark error spans), check agreement "
         "and export trainable data", _args)
def label(args: argparse.Namespace) -> int:
    return args.label_run(args)
