"""Docs that tests check: every CLI command is documented, and the README's set-up is what CI runs."""

from pathlib import Path

from evalsvc.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"### `evalsvc {name}" in readme, f"README has no section for `evalsvc {name}`"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert f"```bash\n{command}\n```" in readme
    assert ci.rstrip().endswith(command)
