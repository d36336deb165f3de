"""What long work reports to: how many cells it has, each batch finished, and whether to stop.

The sampling runner (`RunnerConfig.observer`) calls `start` once, `advance` after each batch and `check`
before each batch, so work asked to stop ends at a batch boundary with every finished cell kept. This base
counts and never stops; `evalsvc.jobs.JobObserver` records a job's counts and reads its cancel mark.
"""

from __future__ import annotations


class Cancelled(Exception):
    """Work stopped before a batch because its observer was asked to; `done` of `total` cells were finished."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"cancelled after {done} of {total} cells")


class Progress:
    """Counts of one piece of work; subclasses record them (`changed`) and may ask to stop (`cancelled`)."""

    def __init__(self):
        self.done = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.done, self.total = 0, total
        self.changed()

    def advance(self, n: int) -> None:
        self.done += n
        self.changed()

    def changed(self) -> None:
        """Called after each `start` and `advance`."""

    def cancelled(self) -> bool:
        return False

    def check(self) -> None:
        """Raise `Cancelled` when asked to stop (called only between batches)."""
        if self.cancelled():
            raise Cancelled(self.done, self.total)


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2.5 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
