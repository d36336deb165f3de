"""Background work queued in the store's `jobs` table and run by worker threads of the process that owns it.

A job is one command's work (`evalsvc.work`: `sample`, `score`, `add`) with its arguments as JSON. The app
queues jobs from its Jobs tab, and from `evalsvc sample/score/add/watch/train` while it holds the store
(`evalsvc.owner`). Each worker thread works on a cursor of its own (`Store.thread_view`); claims go through
one lock, so two workers never take the same job. A job left `running` by a process that died is queued
again when the next owner starts: sampling and scoring resume where they stopped.

A running job's sampling reports to a `JobObserver`, which records its cells done of total in the job's row
after each batch and reads the job's cancel mark before each: `cancel` stops a queued job at once and a
running one at its next batch boundary, every finished cell kept; queueing it again samples the rest.
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import EvalsvcError, InputError
from .progress import Cancelled, Progress, duration

COMMANDS = ("sample", "score", "add")
FINISHED = ("done", "failed", "cancelled")
COLUMNS = ("id, command, run, args, state, submitted_by, submitted_at, started_at, finished_at, exit_code, output, "
           "cells_done, cells_total, progress_at, cancel_by, cancel_at")


@dataclass(frozen=True)
class Job:
    id: int
    command: str
    run: str
    args: dict
    state: str  # queued, running, done, failed, cancelled
    submitted_by: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str | None
    cells_done: int | None = None  # of the cells its sampling started with, as of `progress_at`
    cells_total: int | None = None
    progress_at: datetime | None = None
    cancel_by: str | None = None  # who asked it to stop, and when
    cancel_at: datetime | None = None

    def to_json(self) -> dict:
        return {name: (value.isoformat() if isinstance(value, datetime) else value)
                for name, value in self.__dict__.items()}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _job(row) -> Job:
    values = list(row)
    values[3] = json.loads(values[3])
    return Job(*values)


def submit(db, command: str, args: dict, submitted_by: str) -> int:
    """Queue `command` with `args` (JSON-able, with a `run`); returns the job's id."""
    if command not in COMMANDS:
        raise InputError(f"unknown job command {command!r} (commands: {', '.join(COMMANDS)})")
    if not isinstance(args, dict) or not str(args.get("run") or "").strip():
        raise InputError("a job's arguments must be an object naming its run")
    if not submitted_by.strip():
        raise InputError("a job needs who submitted it")
    return db.execute("INSERT INTO jobs (command, run, args, state, submitted_by, submitted_at) "
                      "VALUES (?, ?, ?, 'queued', ?, ?) RETURNING id",
                      [command, args["run"], json.dumps(args), submitted_by.strip(), _now()]).fetchone()[0]


def get_job(db, job_id: int) -> Job | None:
    row = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchone()
    return _job(row) if row else None


def list_jobs(db, limit: int = 50) -> list[Job]:
    """The latest jobs, newest first."""
    return [_job(r) for r in db.execute(f"SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?", [limit]).fetchall()]


def claim(db) -> Job | None:
    """Mark the oldest queued job running and return it (callers serialise claims: `JobWorkers`)."""
    row = db.execute("UPDATE jobs SET state = 'running', started_at = ? WHERE id = (SELECT min(id) FROM jobs "
                     f"WHERE state = 'queued') RETURNING {COLUMNS}", [_now()]).fetchone()
    return _job(row) if row else None


def finish(db, job_id: int, exit_code: int | None, output: str, state: str | None = None) -> None:
    """Record how a job ended: `state`, else done for exit code 0 and failed for any other."""
    db.execute("UPDATE jobs SET state = ?, finished_at = ?, exit_code = ?, output = ? WHERE id = ?",
               [state or ("done" if exit_code == 0 else "failed"), _now(), exit_code, output, job_id])


def cancel(db, job_id: int, by: str) -> Job:
    """Cancel a queued job now, or mark a running one to stop at its next batch; returns the job after."""
    if not by.strip():
        raise InputError("a cancel needs who asks for it")
    job = get_job(db, job_id)
    if job is None:
        raise InputError(f"no job {job_id}")
    if job.state in FINISHED:
        raise InputError(f"job {job_id} is already {job.state}; only a queued or running job can be cancelled")
    now, by = _now(), by.strip()
    db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_by = ?, cancel_at = ?, output = ? "
               "WHERE id = ? AND state = 'queued'", [now, by, now, f"cancelled by {by} before it started", job_id])
    db.execute("UPDATE jobs SET cancel_by = ?, cancel_at = ? WHERE id = ? AND state = 'running' "
               "AND cancel_at IS NULL", [by, now, job_id])
    return get_job(db, job_id)


def requeue_interrupted(db) -> int:
    """Queue again the jobs a dead owner left running (those asked to stop end cancelled); returns how many."""
    db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, output = 'cancelled; its owner stopped "
               "before it did' WHERE state = 'running' AND cancel_at IS NOT NULL", [_now()])
    return len(db.execute("UPDATE jobs SET state = 'queued', started_at = NULL, cells_done = NULL, "
                          "cells_total = NULL, progress_at = NULL WHERE state = 'running' RETURNING id").fetchall())


@dataclass(frozen=True)
class JobProgress:
    """A job's cells done of total, and the seconds left at its rate so far (None: not known)."""

    done: int | None
    total: int | None
    eta_seconds: float | None = None

    @classmethod
    def of(cls, job: Job) -> "JobProgress":
        if job.cells_total is None:
            return cls(None, None)
        done, total, eta = job.cells_done or 0, job.cells_total, None
        if job.state == "running" and 0 < done < total and job.started_at and job.progress_at:
            eta = (job.progress_at - job.started_at).total_seconds() / done * (total - done)
        return cls(done, total, eta)

    @property
    def cells(self) -> str:
        """`12/24 cells`; empty before the job's sampling started."""
        return "" if self.total is None else f"{self.done}/{self.total} cells"

    @property
    def eta(self) -> str:
        """`about 3 min`; empty when not known."""
        return "" if self.eta_seconds is None else f"about {duration(self.eta_seconds)}"


class JobObserver(Progress):
    """A running job's counts written to its row after each batch, and its cancel mark read before each."""

    def __init__(self, db, job_id: int):
        super().__init__()
        self.db, self.job_id = db, job_id

    def changed(self) -> None:
        self.db.execute("UPDATE jobs SET cells_done = ?, cells_total = ?, progress_at = ? WHERE id = ?",
                        [self.done, self.total, _now(), self.job_id])

    def cancelled(self) -> bool:
        row = self.db.execute("SELECT cancel_at IS NOT NULL FROM jobs WHERE id = ?", [self.job_id]).fetchone()
        return bool(row and row[0])


def run_claimed(store, job: Job, observer: JobObserver | None = None) -> Job:
    """Run a claimed job on `store` (a worker's thread view), record how it ended and return it then."""
    from .work import run_job

    observer = observer or JobObserver(store.db, job.id)
    state = None
    try:
        outcome = run_job(store, job.command, job.args, observer)
        code, output = outcome.exit_code, outcome.text()
    except Cancelled as stopped:
        by = get_job(store.db, job.id).cancel_by
        code, state = None, "cancelled"
        output = (f"cancelled by {by} after {stopped.done} of {stopped.total} cells; those are kept, and queueing "
                  f"the same job again samples the other {stopped.total - stopped.done}")
    except EvalsvcError as exc:
        code, output = exc.exit_code, f"error: {exc}"
    except Exception:  # a job's crash is its own; the worker goes on with the next one
        code, output = 1, traceback.format_exc(limit=8)
    finish(store.db, job.id, code, output, state)
    return get_job(store.db, job.id)


class JobWorkers:
    """`count` threads that run queued jobs on the owner's store until `stop()`."""

    def __init__(self, store, count: int = 1, poll_seconds: float = 1.0):
        if count < 1:
            raise InputError(f"workers must be >= 1, got {count}")
        self.store, self.count, self.poll_seconds = store, count, poll_seconds
        self._claim_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._current: dict[threading.Thread, Job | None] = {}  # each worker's job in hand

    def start(self) -> None:
        with self.store.thread_view() as view:
            requeue_interrupted(view.db)
        for i in range(self.count):
            thread = threading.Thread(target=self._loop, name=f"evalsvc-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """A job was queued: a waiting worker looks now instead of at its next poll."""
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float = 10.0) -> list[Job]:
        """Stop taking jobs and wait up to `timeout` s for the running ones; returns those still running."""
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout)
        return [job for thread, job in self._current.items() if thread.is_alive() and job is not None]

    def _loop(self) -> None:
        with self.store.thread_view() as view:
            while not self._stop.is_set():
                with self._claim_lock:
                    job = claim(view.db)
                if job is None:
                    with self._wake:
                        self._wake.wait(self.poll_seconds)
                    continue
                self._current[threading.current_thread()] = job
                run_claimed(view, job)
                self._current[threading.current_thread()] = None
