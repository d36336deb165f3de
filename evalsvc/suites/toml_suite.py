"""Our own suite format: one suite per TOML file, a `[[prompts]]` table per prompt."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from evalsvc.errors import SuiteError
from evalsvc.suites.model import PromptSpec, Suite, array_lines, entry_where, make_prompt, read_toml

TOP_KEYS = ("name", "description", "goal", "prompts")
PROMPT_KEYS = tuple(f.name for f in dataclasses.fields(PromptSpec))
_STRIPPED = ("text", "negative")


def load_toml_suite(path: str | Path) -> Suite:
    """Load and validate a suite file in our TOML format."""
    data, text = read_toml(Path(path))
    return suite_from_toml(data, Path(path), text)


def suite_from_toml(data: dict, path: Path, text: str = "") -> Suite:
    """Build a Suite from parsed TOML; `text` (the file's text) lets errors name line numbers."""
    unknown = [key for key in data if key not in TOP_KEYS]
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key {unknown[0]!r} (allowed: {', '.join(TOP_KEYS)})")
    entries = data.get("prompts", [])
    if not isinstance(entries, list):
        raise SuiteError(f"{path}: 'prompts' must be an array of tables ([[prompts]])")
    lines = array_lines(text, "prompts")
    if len(lines) != len(entries):
        lines = []
    prompts = []
    for index, entry in enumerate(entries):
        where = entry_where(path, lines, index, f"prompts[{index}]")
        prompts.append(_prompt(entry, where))
    return Suite(
        name=data.get("name", path.stem),
        prompts=tuple(prompts),
        source=str(path),
        description=data.get("description", ""),
        goal=data.get("goal", ""),
    )


def _prompt(entry, where: str) -> PromptSpec:
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: a prompt must be a table, got {entry!r}")
    for key in entry:
        if key not in PROMPT_KEYS:
            raise SuiteError(f"{where}: unknown key {key!r} (allowed: {', '.join(PROMPT_KEYS)})")
    for key in ("id", "text"):
        if key not in entry:
            raise SuiteError(f"{where}: missing key {key!r}")
    fields = dict(entry)
    for key in _STRIPPED:
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].strip()
    return make_prompt(where, **fields)
