"""One writer per store: an advisory lock file that names its owner's PID.

DuckDB allows one read-write process per file and reports a second one with a raw IO error.
We take an flock first so the second process gets a clear message, and the kernel releases
the lock when the owner dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreInUseError


class StoreLock:
    """An exclusive, non-blocking lock on `path`; raises StoreInUseError naming the holder."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUseError(
                f"store {self.path.parent} is in use by PID {holder}; "
                "wait for it to finish or stop that process"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def holder(self) -> str | None:
        """The PID written by the process holding the lock now, or None when nobody holds it."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)  # also drops a shared lock just taken
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
