"""Open, create and upgrade a store; the owner process holds the write lock."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvalsvcError, StoreInUseError
from .lock import StoreLock
from .migrations import MIGRATIONS

DEFAULT_STORE = "evalsvc-store"


def default_store_path() -> Path:
    """`$EVALSVC_STORE` when set, else `./evalsvc-store`."""
    return Path(os.environ.get("EVALSVC_STORE") or DEFAULT_STORE)


@dataclass(frozen=True)
class StoreLayout:
    """Where a store keeps its parts."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "evalsvc.duckdb"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def lock(self) -> Path:
        return self.root / "lock"


class Store:
    """An open store: the DuckDB connection of the one writer, or a read-only reader."""

    def __init__(self, layout: StoreLayout, connection, lock: StoreLock | None, owner: "Store | None" = None):
        self.layout = layout
        self.db = connection
        self._lock = lock
        self.owner = owner  # the writer this is a thread view of

    @property
    def read_only(self) -> bool:
        return self._lock is None and self.owner is None

    @contextlib.contextmanager
    def transaction(self):
        """All statements inside commit together or not at all."""
        self.db.execute("BEGIN TRANSACTION")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def thread_view(self):
        """This store on a DuckDB cursor of its own, for another thread of the process that owns it."""
        view = Store(self.layout, self.db.cursor(), None, owner=self)
        try:
            yield view
        finally:
            view.db.close()
            view.db = None

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM migrations ORDER BY name").fetchall()]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pending_migrations(db) -> list[tuple[str, str]]:
    """The migrations not yet applied to `db` (all of them for a database without a `migrations` table)."""
    import duckdb

    try:
        done = {r[0] for r in db.execute("SELECT name FROM migrations").fetchall()}
    except duckdb.CatalogException:
        done = set()
    return [(name, sql) for name, sql in MIGRATIONS if name not in done]


def _migrate(db) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)")
    for name, sql in _pending_migrations(db):
        db.execute("BEGIN TRANSACTION")
        try:
            sql(db) if callable(sql) else db.execute(sql)
            db.execute("INSERT INTO migrations (name) VALUES (?)", [name])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def open_store(root: Path | str | None = None, *, create: bool = True, read_only: bool = False) -> Store:
    """Open the store at `root` (default: `default_store_path()`), creating and migrating it.

    The writer takes the store's lock first; a second writer gets StoreInUseError naming the
    PID of the first. Readers open the database read-only, which DuckDB allows only while no
    process writes.
    """
    import duckdb

    layout = StoreLayout(Path(root) if root is not None else default_store_path())
    if not layout.database.exists():
        if not create or read_only:
            raise EvalsvcError(f"{layout.root}: no store here; create one with `evalsvc init --store {layout.root}`")
        for folder in (layout.root, layout.images, layout.tmp, layout.shards):
            folder.mkdir(parents=True, exist_ok=True)
    if read_only:
        holder, db = StoreLock(layout.lock).holder(), None
        if holder is None:
            with contextlib.suppress(duckdb.IOException, duckdb.ConnectionException):
                db = duckdb.connect(str(layout.database), read_only=True)
        if db is None:
            raise _in_use_by_app(layout.root) or StoreInUseError(
                f"store {layout.root} is in use by PID {holder or 'unknown'}; it can be read once that process has "
                "finished")
        if _pending_migrations(db):  # written by an older evalsvc: upgrade it (nobody holds it), then read it
            db.close()
            open_store(layout.root).close()
            return open_store(layout.root, create=False, read_only=True)
        return Store(layout, db, None)
    lock = StoreLock(layout.lock)
    try:
        lock.acquire()
    except StoreInUseError as exc:
        raise _in_use_by_app(layout.root) or exc from None
    try:
        for folder in (layout.images, layout.tmp, layout.shards):
            folder.mkdir(parents=True, exist_ok=True)
        db = duckdb.connect(str(layout.database))
        _migrate(db)
    except duckdb.IOException as exc:
        lock.release()
        raise StoreInUseError(f"store {layout.root} is in use by another process: {exc}") from None
    except BaseException:
        lock.release()
        raise
    return Store(layout, db, lock)


def _in_use_by_app(root: Path) -> StoreInUseError | None:
    """The in-use error naming the app, when the store's holder is a live evalsvc app."""
    from ..owner import find_link

    link = find_link(root)
    if link is None:
        return None
    return StoreInUseError(f"store {root} is in use by the evalsvc app (PID {link.pid}) at {link.url}; `sample`, "
                           "`score`, `add`, `watch` and `train` queue their work there, other commands need the app "
                           "stopped (the app itself shows grids, scores and reports)")
