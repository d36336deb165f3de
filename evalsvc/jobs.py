"""Background work queued in the store's `jobs` table and run by worker threads of the process that owns it.

A job is one command's work (`evalsvc.work`: `sample`, `score`, `add`) with its arguments as JSON. The app
queues jobs from its Jobs tab, and from `evalsvc sample/score/add/watch/train` while it holds the store
(`evalsvc.owner`). Each worker thread works on a cursor of its own (`Store.thread_view`); claims go through
one lock, so two workers never take the same job. A job left `running` by a process that died is queued
again when the next owner starts: sampling and scoring resume where they stopped.
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import EvalsvcError, InputError

COMMANDS = ("sample", "score", "add")
COLUMNS = "id, command, run, args, state, submitted_by, submitted_at, started_at, finished_at, exit_code, output"


@dataclass(frozen=True)
class Job:
    id: int
    command: str
    run: str
    args: dict
    state: str  # queued, running, done, failed
    submitted_by: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str | None

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


def finish(db, job_id: int, exit_code: int, output: str) -> None:
    db.execute("UPDATE jobs SET state = ?, finished_at = ?, exit_code = ?, output = ? WHERE id = ?",
               ["done" if exit_code == 0 else "failed", _now(), exit_code, output, job_id])


def requeue_interrupted(db) -> int:
    """Queue again the jobs a dead owner left running; returns how many."""
    return len(db.execute("UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running' "
                          "RETURNING id").fetchall())


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
        from .work import run_job

        with self.store.thread_view() as view:
            while not self._stop.is_set():
                with self._claim_lock:
                    job = claim(view.db)
                if job is None:
                    with self._wake:
                        self._wake.wait(self.poll_seconds)
                    continue
                self._current[threading.current_thread()] = job
                try:
                    outcome = run_job(view, job.command, job.args)
                    code, output = outcome.exit_code, outcome.text()
                except EvalsvcError as exc:
                    code, output = exc.exit_code, f"error: {exc}"
                except Exception:  # a job's crash is its own; the worker goes on with the next one
                    code, output = 1, traceback.format_exc(limit=8)
                finish(view.db, job.id, code, output)
                self._current[threading.current_thread()] = None
