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


def test_readme_and_ci_install_through_the_one_install_path():
    """One recipe: the README's first command and CI both run scripts/install, which installs the lock."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = (ROOT / "scripts" / "install").read_text()
    assert "```bash\nbash scripts/install && .venv/bin/evalsvc demo\n```" in readme
    assert "\nbash scripts/install .venv " in ci and "pip install" not in ci
    assert "--require-hashes -r requirements.lock" in install
    assert "--no-deps --no-build-isolation -e ." in install
