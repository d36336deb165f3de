"""`evalsvc doctor`: what this environment has, whether it is the locked one, and which scorer weights are here.

For bug reports and for users on their own GPU machines: one table of the libraries evalsvc stands on
(installed version, the lock's, the range pyproject.toml allows), the accelerator torch sees, and the
scorer weights present locally with the command that fetches each missing one. A problem (a library
that does not import, a version outside evalsvc's ranges or unlike the lock, a weight file given but
unusable) is one line each; missing optional weights are listed with their fetch command but do not
make the environment unusable (the toy CLIP and the other metrics still run).
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .errors import EvalsvcError
from .lockfile import Mismatch, locked_versions, mismatches, read_lock

if TYPE_CHECKING:
    from .scoring.backbone import BackboneSpec

# (distribution, module to import): the libraries of the table, in the order they are shown
LIBRARIES = (("torch", "torch"), ("torchvision", "torchvision"), ("diffusers", "diffusers"),
             ("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate"),
             ("open-clip-torch", "open_clip"), ("torchmetrics", "torchmetrics"), ("gradio", "gradio"),
             ("duckdb", "duckdb"), ("safetensors", "safetensors"))
MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class DoctorConfig:
    """What to check: the lock (None: no lock to compare with) and the weights a user would score with."""

    lock: Path | None = None
    backbone: BackboneSpec | None = None  # a backbone to check besides the default and the toy one
    aesthetic: Path | None = None
    pickscore: Path | None = None
    allow_pickle: bool = False


@dataclass(frozen=True)
class Finding:
    """One row of the report: what was looked for, what was found, and what is wrong or missing."""

    name: str
    found: str
    expected: str = ""
    status: str = "ok"
    problem: str | None = None  # set when this makes the environment unusable
    fetch: str | None = None  # for missing optional weights: the command that gets them


@dataclass(frozen=True)
class Report:
    packages: list[Finding]
    weights: list[Finding]
    lock_note: str  # which lock was compared, and how much of it holds
    lock_problems: list[str] = field(default_factory=list)  # locked packages outside the table that differ

    @property
    def problems(self) -> list[str]:
        return [f.problem for f in self.packages if f.problem] + self.lock_problems + \
            [f.problem for f in self.weights if f.problem]


def _requirements() -> dict[str, Requirement]:
    """evalsvc's own dependency ranges (pyproject.toml, as installed), by canonical name."""
    try:
        lines = metadata.requires("evalsvc") or []
    except metadata.PackageNotFoundError:
        return {}
    out = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            out[canonicalize_name(requirement.name)] = requirement
    return out


def _accelerator(torch) -> str:
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        return f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {', '.join(names)}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "MPS (Apple GPU)"
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    return f"none ({build}, no GPU visible): the CPU"


def check_packages(locked: dict[str, str] | None, differing: set[str]) -> list[Finding]:
    """Python and each library of LIBRARIES against evalsvc's ranges and the lock (None: no lock); `differing`
    names the locked packages installed at another version."""
    ranges = _requirements()
    python = ".".join(map(str, sys.version_info[:3]))
    rows = [Finding("Python", f"{python} ({platform.machine()}, {sys.platform})", ">= 3.11",
                    *(("ok", None) if sys.version_info[:2] >= MIN_PYTHON else
                      ("too old", f"Python {python} is older than 3.11, which evalsvc needs")))]
    for distribution, module in LIBRARIES:
        name = canonicalize_name(distribution)
        expected = (locked or {}).get(name, "")
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            rows.append(Finding(distribution, "not installed", expected, "missing",
                                f"{distribution} is not installed: scripts/install installs the lock"))
            continue
        try:
            imported = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is what the user needs to see
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rows.append(Finding(distribution, version, expected, "import fails",
                                f"{distribution} {version} does not import: {first}"))
            continue
        allowed = ranges.get(name)
        if allowed is not None and allowed.specifier and not allowed.specifier.contains(version, prereleases=True):
            rows.append(Finding(distribution, version, expected, "outside range",
                                f"{distribution} {version} is outside evalsvc's range {allowed.specifier} "
                                "(pyproject.toml): a known-broken or untested combination"))
        elif name in differing:
            rows.append(Finding(distribution, version, expected, "differs from the lock",
                                f"{distribution} {version} is installed; the lock has {expected}"))
        else:
            rows.append(Finding(distribution, version, expected, "ok" if expected or locked is None else "not locked"))
        if module == "torch":
            rows.append(Finding("  accelerator", _accelerator(imported), status="-"))
    return rows


def lock_problems(differing: list[Mismatch]) -> list[str]:
    """A problem line for each differing locked package outside the table (the table shows its own)."""
    shown = {canonicalize_name(d) for d, _ in LIBRARIES}
    return [m.describe() for m in differing if m.name not in shown]


def _backbone_finding(label: str, spec: BackboneSpec) -> Finding:
    from .scoring.backbone import MissingWeights, fetch_command, require_weights

    try:
        return Finding(label, require_weights(spec), status="present")
    except MissingWeights as exc:
        if spec.is_file:
            return Finding(label, spec.pretrained, status="missing", problem=f"--clip-weights: {exc}")
        return Finding(label, "not in the model cache", status="missing", fetch=fetch_command(spec))


def check_weights(config: DoctorConfig) -> list[Finding]:
    """The scorer weights on this machine: the toy CLIP, the default CLIP backbone (or the one given), the
    aesthetic head and PickScore; a file the user named that is missing or unusable is a problem."""
    from .scoring.backbone import BackboneSpec, MissingWeights
    from .scoring.preference import (AESTHETIC_FETCH, PICKSCORE_PROCESSOR_REPO, PICKSCORE_REPO, cached_snapshot,
                                     hub_download_command, load_aesthetic_head, pickscore_folder, pickscore_missing)

    rows = [_backbone_finding("CLIP toy (--backbone toy)", BackboneSpec.toy())]
    default = BackboneSpec()
    rows.append(_backbone_finding(f"CLIP {default.model}:{default.pretrained} (the default)", default))
    given = config.backbone
    if given is not None and given != default:
        rows.append(_backbone_finding(f"CLIP {given.model} ({given.pretrained})", given))
    if config.aesthetic is None:
        rows.append(Finding("aesthetic head (LAION v2)", "not given", status="not checked", fetch=AESTHETIC_FETCH))
    else:
        try:
            load_aesthetic_head(config.aesthetic, config.allow_pickle)
            rows.append(Finding("aesthetic head (LAION v2)", str(config.aesthetic), status="present"))
        except MissingWeights as exc:
            rows.append(Finding("aesthetic head (LAION v2)", str(config.aesthetic), status="unusable",
                                problem=f"--aesthetic-weights: {exc}"))
    missing = pickscore_missing(config.pickscore)
    folder = pickscore_folder(config.pickscore)
    if missing is None:
        rows.append(Finding("PickScore v1", str(folder), status="present"))
    elif config.pickscore is not None:
        rows.append(Finding("PickScore v1", str(config.pickscore), status="unusable",
                            problem=f"--pickscore-weights: {missing}"))
    else:
        rows.append(Finding("PickScore v1", "not in the model cache", status="missing",
                            fetch=hub_download_command(PICKSCORE_REPO)))
    processor = cached_snapshot(PICKSCORE_PROCESSOR_REPO)
    rows.append(Finding("PickScore processor (CLIP-H)", str(processor) if processor else "not in the model cache",
                        status="present" if processor else "missing",
                        fetch=None if processor else hub_download_command(PICKSCORE_PROCESSOR_REPO)))
    return rows


def diagnose(config: DoctorConfig) -> Report:
    """Every check of `config`; `render` shows the result."""
    locked, differing, problems = None, [], []
    if config.lock is None:
        note = "no lock: evalsvc is not installed from its source tree, so versions are not compared with one"
    else:
        try:
            pins = read_lock(config.lock)
        except EvalsvcError as exc:
            problems, note = [str(exc)], f"lock {config.lock}: unreadable"
        else:
            locked, differing = locked_versions(pins), mismatches(pins)
            problems = lock_problems(differing)
            note = f"lock {config.lock}: {len(locked) - len(differing)} of {len(locked)} locked packages as locked"
    packages = check_packages(locked, {m.name for m in differing})
    return Report(packages, check_weights(config), note, problems)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(headers), line(tuple("-" * w for w in widths)), *map(line, rows)]


def render(report: Report) -> str:
    """The report as text: the package table, the weights table, then what to fetch and what is wrong."""
    lines = _table(("package", "installed", "lock", "status"),
                   [(f.name, f.found, f.expected, f.status) for f in report.packages])
    lines += ["", report.lock_note, ""]
    lines += _table(("scorer weights", "where", "status"), [(f.name, f.found, f.status) for f in report.weights])
    fetches = [f for f in report.weights if f.fetch and not f.problem]
    if fetches:
        lines += ["", "to fetch missing weights (on a machine with internet):"]
        lines += [f"  {f.name}: {f.fetch}" for f in fetches]
    problems = report.problems
    lines += ["", f"{len(problems)} problem{'s' if len(problems) != 1 else ''}" + (":" if problems else
                                                                                    ": this environment is usable")]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
