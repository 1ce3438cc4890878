"""The ``alignkit`` command line.

Every sub-command takes a YAML config and ``key.sub=value`` overrides. Errors a
user can cause print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from alignkit import __version__
from alignkit.errors import AlignkitError, disk_full

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def wrap(fn):
        COMMANDS[name] = (help_text, add_args, fn)
        return fn

    return wrap


def _train_args(p: argparse.ArgumentParser) -> None:
    """The config file, overrides, and every key in the help (from the config's field docs)."""
    from alignkit.config import Config
    from alignkit.config.help import format_keys, keys

    _config_args(p)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("every config key (`alignkit config show METHOD` lists those one method reads, "
                "with its loss's hyper-parameters):\n\n" + format_keys(keys(Config)))


def _config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("config", nargs=None if required else "?", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override any config key")


@command(
    "train",
    "train a model: SFT, a reward model, any preference loss, RAFT/RSO/online methods, PPO/RLOO/GRPO "
    "(the config's `method` picks one)",
    _train_args,
)
def _train(args: argparse.Namespace) -> int:
    from alignkit.api import train
    from alignkit.config import load_config

    run = train(config=load_config(args.config, args.overrides))
    print(f"done: {run.final}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from alignkit.diffusion.cli import method_lines
    from alignkit.losses import hyperparameters
    from alignkit.train.methods import all_methods

    for name, spec in sorted(all_methods().items()):
        if spec.family == "diffusion":  # listed below with their feedback kind and hyper-parameters
            continue
        ref = "reference" if spec.needs_reference else "reference-free"
        hp = ", ".join(f"{k}={v}" for k, v in hyperparameters(spec.uses).items()) if spec.family == "preference" else ""
        update = f"update={spec.default_update}" if spec.default_update else ""
        if spec.family == "rl":  # the paper and the ppo: defaults the algorithm reads
            from alignkit.config.rl import PPOConfig
            from alignkit.train.algorithms import ALGORITHMS

            algo, ppo_defaults = ALGORITHMS[spec.uses], vars(PPOConfig())
            hp = f"({algo.paper}) " + ", ".join(f"ppo.{k}={ppo_defaults[k]}" for k in algo.reads)
        elif spec.paper:
            hp = f"({spec.paper}) {hp}".rstrip()
        print(f"{name:14s} {spec.family:12s} {spec.data:8s} {ref:14s} {hp or update}".rstrip())
    print("\n".join(method_lines()))
    return 0


COMMANDS["methods"] = ("list the training methods and their default hyper-parameters", lambda p: None, _methods)


def build_parser() -> argparse.ArgumentParser:
    _import_commands()
    parser = argparse.ArgumentParser(
        prog="alignkit",
        description="Align language models with human feedback: SFT, reward models, PPO, and the RL-free "
        "preference methods (DPO, IPO, SimPO, RRHF, PRO, listwise DPO, KTO, RAFT, RSO, ...), "
        "evaluated and compared on the same footing.",
    )
    parser.add_argument("--version", action="version", version=f"alignkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=fn)
    return parser


def _import_commands() -> None:
    """Sub-commands that live beside their feature register themselves on import."""
    import importlib

    for name in ("alignkit.rewards.cli", "alignkit.engine.cli", "alignkit.eval.cli", "alignkit.demo.cli",
                 "alignkit.label.cli", "alignkit.config.cli"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name and not name.startswith(str(err.name)):
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except AlignkitError as err:
        if args.verbose:
            raise
        print(f"alignkit {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # 2, or 128 + N after signal N asked the run to stop
    except Exception as err:
        if args.verbose or not disk_full(err):
            raise
        print(f"alignkit {args.command}: error: no space left on device ({type(err).__name__}: "
              f"{_first_line(err)}); free space or point train.output_dir elsewhere, then run again "
              "(with train.resume=true to continue from the last checkpoint)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alignkit {args.command}: interrupted; checkpoints already written are kept "
              "(run again with train.resume=true to continue)", file=sys.stderr)
        return 130


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


if __name__ == "__main__":
    # Run as `python -m alignkit.cli`, this file is `__main__`, a second copy of the module: the command
    # modules register into `alignkit.cli`, so it is that copy's main that knows every command.
    from alignkit.cli import main as package_main

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(package_main())
