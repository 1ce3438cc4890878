"""CI runs exactly the README's test command, and the quick start names commands that exist."""

import re
from pathlib import Path

from alignkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text()


def test_quick_start_subcommands_exist():
    main_job = readme_commands()[0]
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for used in re.findall(r"alignkit (\w+)", main_job):
        assert used in subcommands, used
