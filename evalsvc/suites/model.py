"""Prompt suites as frozen, validated values, plus the helpers every suite loader shares."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from evalsvc import textfiles
from evalsvc.errors import SuiteError

ROLES = ("target", "holdout", "reference")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of a suite; the optional grid values come from imported sample-prompt files."""

    id: str
    text: str
    negative: str = ""
    tags: tuple[str, ...] = ()
    role: str = "target"
    seed: int | None = None
    cfg: float | None = None
    steps: int | None = None
    sampler: str | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self):
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise SuiteError(
                f"prompt id must be letters, digits, '.', '_' or '-' (starting with a letter or digit), got {self.id!r}"
            )
        problem = next(self._problems(), None)
        if problem:
            raise SuiteError(f"prompt {self.id!r}: {problem}")
        # Normalise equal values to one form, so that the content hash does not depend on how a file wrote them.
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.cfg is not None:
            object.__setattr__(self, "cfg", float(self.cfg))
        if self.sampler is not None:
            object.__setattr__(self, "sampler", self.sampler.strip().lower())

    def _problems(self):
        """What is wrong with the fields, if anything (the first is reported)."""
        if not isinstance(self.text, str) or not self.text.strip():
            yield f"text must be a non-empty string, got {self.text!r}"
        if not isinstance(self.negative, str):
            yield f"negative must be a string, got {self.negative!r}"
        if not isinstance(self.tags, (tuple, list)) or not all(isinstance(t, str) and t.strip() for t in self.tags):
            yield f"tags must be a list of non-empty strings, got {self.tags!r}"
        if self.role not in ROLES:
            yield f"role must be one of {', '.join(ROLES)}, got {self.role!r}"
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed < 2**32):
            yield f"seed must be an integer in 0..{2**32 - 1}, got {self.seed!r}"
        is_number = isinstance(self.cfg, (int, float)) and not isinstance(self.cfg, bool)
        if self.cfg is not None and not (is_number and math.isfinite(self.cfg) and self.cfg > 0):
            yield f"cfg must be a number > 0, got {self.cfg!r}"
        if self.steps is not None and not (_is_int(self.steps) and 1 <= self.steps <= 1000):
            yield f"steps must be an integer in 1..1000, got {self.steps!r}"
        if self.sampler is not None and not (isinstance(self.sampler, str) and self.sampler.strip()):
            yield f"sampler must be a non-empty string, got {self.sampler!r}"
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 64 and value % 8 == 0):
                yield f"{name} must be a multiple of 8 and at least 64, got {value!r}"


@dataclass(frozen=True)
class Suite:
    """A named, ordered set of prompts; identified by `content_hash`, not by its file."""

    name: str
    prompts: tuple[PromptSpec, ...]
    source: str = ""
    description: str = ""
    notes: tuple[str, ...] = ()  # what loading left out or guessed, for the user; not part of the content
    goal: str = ""  # what the LoRA it tests is for (`evalsvc.goals`: concept, character, style); "" says nothing

    def __post_init__(self):
        where = self.source or self.name
        object.__setattr__(self, "notes", tuple(self.notes))
        if not isinstance(self.name, str) or not self.name.strip() or "\n" in self.name:
            raise SuiteError(f"{where}: suite name must be a non-empty one-line string, got {self.name!r}")
        if not isinstance(self.description, str):
            raise SuiteError(f"{where}: description must be a string, got {self.description!r}")
        from evalsvc.goals import GOALS

        if self.goal and self.goal not in GOALS:
            raise SuiteError(f"{where}: goal must be one of {', '.join(GOALS)}, got {self.goal!r}")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.prompts:
            raise SuiteError(f"{where}: suite has no prompts")
        seen = set()
        for prompt in self.prompts:
            if not isinstance(prompt, PromptSpec):
                raise SuiteError(f"{where}: prompts must be PromptSpec values, got {prompt!r}")
            if prompt.id in seen:
                raise SuiteError(f"{where}: duplicate prompt id {prompt.id!r}")
            seen.add(prompt.id)

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the name, the goal (when given) and every prompt field; the source and description do
        not count."""
        content = {"name": self.name, "prompts": [dataclasses.asdict(p) for p in self.prompts]}
        if self.goal:
            content["goal"] = self.goal
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def by_role(self, role: str) -> tuple[PromptSpec, ...]:
        """The prompts with this role, in suite order."""
        if role not in ROLES:
            raise SuiteError(f"unknown prompt role {role!r} (expected one of {', '.join(ROLES)})")
        return tuple(p for p in self.prompts if p.role == role)


def derived_seed(text: str) -> int:
    """A fixed seed for a prompt whose file leaves the seed random: the first 4 bytes of sha256(text)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


def make_prompt(where: str, **fields) -> PromptSpec:
    """Build a PromptSpec, prefixing any validation error with `where` (file, line, entry)."""
    try:
        return PromptSpec(**fields)
    except SuiteError as error:
        raise SuiteError(f"{where}: {error}") from None


def read_text(path: Path) -> str:
    """The UTF-8 text of a suite file."""
    return textfiles.read_text(path, "suite file", SuiteError)


def read_json(path: Path):
    """The parsed JSON of a suite file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise SuiteError(f"{path}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None


def read_toml(path: Path) -> tuple[dict, str]:
    """The parsed TOML of a suite file and its text (for `array_lines`)."""
    return textfiles.read_toml(path, "suite file", SuiteError)


def array_lines(text: str, header: str) -> list[int]:
    """1-based line numbers of the `[[header]]` lines of a TOML text, in order."""
    pattern = re.compile(r"\s*\[\[\s*" + re.escape(header).replace(r"\.", r"\s*\.\s*") + r"\s*\]\]")
    return [n for n, line in enumerate(text.split("\n"), 1) if pattern.match(line)]


def entry_where(path, lines: list[int], index: int, label: str) -> str:
    """`file:line: label` when the entry's header line is known, else `file: label`."""
    return f"{path}:{lines[index]}: {label}" if index < len(lines) else f"{path}: {label}"
