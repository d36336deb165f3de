"""`evalsvc watch`: evaluate checkpoints from any trainer as they land in a folder.

A file is taken only once it is complete: its size and modification time have not changed for
`stable_seconds` and its header parses (a safetensors file still being written fails the
header's data-length check). Each distinct content is evaluated once: the catalog identifies
checkpoints by sha256 and finished grid cells are never sampled again, also after a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .catalog import iter_checkpoint_paths
from .errors import CheckpointError, InputError

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


@dataclass(frozen=True)
class WatchConfig:
    interval: float = 5.0  # seconds between scans
    stable_seconds: float = 2.0  # unchanged size and mtime for this long before a file is read
    max_idle: float | None = None  # stop after this long without a new checkpoint (None: run until stopped)

    def __post_init__(self):
        if self.interval <= 0 or self.stable_seconds < 0:
            raise InputError("--interval must be > 0 and --stable-seconds >= 0")
        if self.max_idle is not None and self.max_idle <= 0:
            raise InputError("--max-idle must be > 0")


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "new" | "known" | "refused" | "sampled" | "idle"
    path: str = ""
    detail: str = ""
    report: object = None


def _signature(path: Path) -> tuple[int, float]:
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files), max((p.stat().st_mtime for p in files), default=0.0)
    stat = path.stat()
    return stat.st_size, stat.st_mtime


def _header_parses(path: Path) -> bool:
    if path.is_dir() or path.suffix != ".safetensors":
        return True
    from .checkpoints import read_header

    try:
        read_header(path)
    except CheckpointError:
        return False
    return True


@dataclass
class FolderWatcher:
    """Hands out each complete checkpoint file of a folder once per content signature."""

    folder: Path
    config: WatchConfig
    _seen: dict[Path, tuple[tuple[int, float], float]] = field(default_factory=dict)
    _handed: dict[Path, tuple[int, float]] = field(default_factory=dict)

    def poll(self, now: float | None = None) -> list[Path]:
        now = time.time() if now is None else now
        ready = []
        for path in iter_checkpoint_paths(self.folder):
            if path.name.endswith(PARTIAL_SUFFIXES) or not path.exists():
                continue
            try:
                signature = _signature(path)
            except FileNotFoundError:
                continue
            if self._handed.get(path) == signature:
                continue
            previous = self._seen.get(path)
            if previous is None or previous[0] != signature:
                # First sight, or changed since: stable from its mtime on, if that is old enough.
                self._seen[path] = (signature, min(now, signature[1]))
                previous = self._seen[path]
            if now - previous[1] < self.config.stable_seconds:
                continue
            if not _header_parses(path):
                # Complete-looking but unreadable: maybe still being written in place; wait for a
                # change, and hand it out (to be refused with its reason) once it has been stable
                # for twice the time.
                if now - previous[1] < 2 * self.config.stable_seconds:
                    continue
            self._handed[path] = signature
            ready.append(path)
        return ready


def ready_batches(folder: Path, config: WatchConfig) -> Iterator[list[Path]]:
    """Each scan's newly complete checkpoints (scans that find none are skipped), until `max_idle` seconds pass
    without any; the clock restarts once the caller is done with a batch."""
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder")
    watcher = FolderWatcher(Path(folder), config)

    def scans():
        last_new = time.monotonic()
        while True:
            ready = watcher.poll()
            if ready:
                yield ready
                last_new = time.monotonic()
            if config.max_idle is not None and time.monotonic() - last_new > config.max_idle:
                return
            time.sleep(config.interval)

    return scans()


def watch(store, folder: Path, run: str, suite, options, runner_config, config: WatchConfig,
          base: Path | None = None) -> Iterator[WatchEvent]:
    """Register and sample each complete checkpoint that appears in `folder`; yields what happened."""
    from .catalog import add_checkpoints
    from .sampling.runner import sample_run

    batches = ready_batches(folder, config)
    if base is not None:
        add_checkpoints(store, [], run, base=base)
    refused_before: set[tuple[str, str]] = set()
    for ready in batches:
        report = add_checkpoints(store, ready, run)
        for info in report.added:
            yield WatchEvent("new", str(info.path))
        for info in report.known:
            yield WatchEvent("known", str(info.path), "same content as a registered checkpoint")
        for path, reason in report.refused:
            if (path, reason) not in refused_before:
                refused_before.add((path, reason))
                yield WatchEvent("refused", path, reason)
        if report.added or report.known:
            yield WatchEvent("sampled", report=sample_run(store, run, suite, options, runner_config))
    yield WatchEvent("idle", detail=f"idle for {config.max_idle:g} s")
