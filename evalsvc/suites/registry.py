"""Find suites: by file path (any supported format) or by name in the suite folders."""

from __future__ import annotations

import os
from pathlib import Path

from evalsvc.errors import SuiteError
from evalsvc.suites import kohya, onetrainer, toml_suite
from evalsvc.suites.training_captions import suite_from_training_folder
from evalsvc.suites.model import Suite, read_json, read_toml

EXTENSIONS = (".toml", ".txt", ".json")


def builtin_suite_dirs() -> list[Path]:
    """The repository's `prompts/` folder, then `./prompts` when it is another folder (existing ones only)."""
    dirs = []
    for folder in (Path(__file__).resolve().parents[2] / "prompts", Path.cwd() / "prompts"):
        if folder.is_dir() and folder.resolve() not in dirs:
            dirs.append(folder.resolve())
    return dirs


def load_suite_file(path: str | Path) -> Suite:
    """Load a suite file, recognising our TOML, kohya txt/toml/json and OneTrainer samples.json."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data, text = read_toml(path)
        if "prompts" in data:
            return toml_suite.suite_from_toml(data, path, text)
        if "prompt" in data:
            return kohya.suite_from_kohya_toml(data, path, text)
        raise SuiteError(f"{path}: neither a suite (top-level [[prompts]]) nor a kohya prompt file ([prompt] table)")
    if suffix == ".txt":
        return kohya.load_kohya(path)
    if suffix == ".json":
        data = read_json(path)
        if onetrainer.is_onetrainer_samples(data):
            return onetrainer.suite_from_samples(data, path)
        return kohya.suite_from_kohya_json(data, path)
    raise SuiteError(f"{path}: unsupported suite file type {suffix or '(none)'!r} (expected {', '.join(EXTENSIONS)})")


def list_suites(dirs: list[str | Path] | None = None) -> list[Suite]:
    """Every `*.toml` suite in the folders, sorted by name; two suites with one name are an error."""
    suites = []
    for folder in builtin_suite_dirs() if dirs is None else [Path(d) for d in dirs]:
        if not folder.is_dir():
            raise SuiteError(f"{folder}: suite folder not found")
        suites += [load_suite_file(path) for path in sorted(folder.glob("*.toml"))]
    by_name = {}
    for suite in suites:
        if suite.name in by_name:
            raise SuiteError(f"two suites named {suite.name!r}: {by_name[suite.name].source} and {suite.source}")
        by_name[suite.name] = suite
    return sorted(suites, key=lambda s: s.name)


def load_suite(ref: str, dirs: list[str | Path] | None = None) -> Suite:
    """A suite by file path, a training folder's captions (the memorisation probe), else by name (or file
    stem) in `dirs` (default: `builtin_suite_dirs()`)."""
    path = Path(ref)
    if path.is_file():
        return load_suite_file(path)
    if path.is_dir():
        return suite_from_training_folder(path)
    if path.exists():
        raise SuiteError(f"{ref}: not a file")
    if "/" in ref or os.sep in ref or path.suffix.lower() in EXTENSIONS:
        raise SuiteError(f"{ref}: file not found")
    suites = list_suites(dirs)
    named = [s for s in suites if s.name == ref] or [s for s in suites if Path(s.source).stem == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise SuiteError(f"suite {ref!r} is ambiguous: {', '.join(s.source for s in named)}")
    available = ", ".join(s.name for s in suites) or "(none)"
    raise SuiteError(f"unknown suite {ref!r}; available: {available}")
