"""The committed lock (`requirements.lock`): its pins, and where the installed packages differ from them.

The lock is uv's universal requirements format (`scripts/lock`): one `name==version ; marker` line per
package, each followed by the sha256 of its files. A pin applies where its marker holds on this
interpreter and platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .errors import InputError

LOCK_NAME = "requirements.lock"


@dataclass(frozen=True)
class Pin:
    """One locked package: its canonical name, exact version, and the marker saying where it applies."""

    name: str
    version: str
    marker: str | None = None

    def applies(self) -> bool:
        return self.marker is None or Marker(self.marker).evaluate()


@dataclass(frozen=True)
class Mismatch:
    """A locked package installed at another version, or not at all (`installed` None)."""

    name: str
    locked: str
    installed: str | None

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name} is not installed; the lock has {self.locked}"
        return f"{self.name} {self.installed} is installed; the lock has {self.locked}"


def source_lock() -> Path | None:
    """The lock of the source tree evalsvc runs from (an editable or source install), else None."""
    path = Path(__file__).resolve().parent.parent / LOCK_NAME
    return path if path.is_file() else None


def read_lock(path: Path) -> list[Pin]:
    """Every pin of the lock at `path`, refusing a line that is not `name==version`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"lock {path}: cannot be read ({exc.strerror or exc})") from None
    pins = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line[:1].isalnum():  # comments, `--hash` continuation lines, blank lines
            continue
        spec = line.rstrip(" \\")
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as exc:
            raise InputError(f"lock {path}, line {number}: {exc}") from None
        (clause, *more) = list(requirement.specifier) or [None]
        if clause is None or more or clause.operator != "==":
            raise InputError(f"lock {path}, line {number}: {spec!r} is not pinned to one version (name==version)")
        pins.append(Pin(canonicalize_name(requirement.name), clause.version,
                        str(requirement.marker) if requirement.marker else None))
    if not pins:
        raise InputError(f"lock {path}: no pinned packages in it")
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def locked_versions(pins: list[Pin]) -> dict[str, str]:
    """`{canonical name: version}` of the pins that apply here."""
    return {pin.name: pin.version for pin in pins if pin.applies()}


def mismatches(pins: list[Pin]) -> list[Mismatch]:
    """The pins that apply here whose package is missing or installed at another version, by name."""
    out = []
    for name, locked in sorted(locked_versions(pins).items()):
        installed = installed_version(name)
        if installed is None or Version(installed) != Version(locked):
            out.append(Mismatch(name, locked, installed))
    return out
