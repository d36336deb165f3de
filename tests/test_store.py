import subprocess
import sys
import textwrap

import pytest

from evalsvc.errors import StoreInUseError
from evalsvc.store import open_store
from evalsvc.store.migrations import MIGRATIONS


def test_migrations_are_recorded_and_applied_once(tmp_path):
    with open_store(tmp_path / "s") as store:
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        store.db.execute("INSERT INTO runs (name) VALUES ('keep')")
    with open_store(tmp_path / "s") as store:  # reopening migrates nothing and keeps the data
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.db.execute("SELECT name FROM runs").fetchall() == [("keep",)]


def test_second_writer_is_told_the_owner_pid(tmp_path):
    root = tmp_path / "s"
    open_store(root).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from evalsvc.store import open_store
            s = open_store({str(root)!r})
            print("ready", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreInUseError, match=f"in use by PID {holder.pid}"):
            open_store(root)
        with pytest.raises(StoreInUseError, match=f"in use by PID {holder.pid}"):
            open_store(root, read_only=True)  # `evalsvc status` while a sampler runs
    finally:
        holder.communicate("\n", timeout=30)
    open_store(root).close()  # released when the owner exits


def test_transaction_rolls_back_on_error(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("INSERT INTO runs (name) VALUES ('half')")
            raise RuntimeError("boom")
    assert store.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_reader_needs_an_existing_store(tmp_path):
    from evalsvc.errors import EvalsvcError

    with pytest.raises(EvalsvcError, match="no store here"):
        open_store(tmp_path / "missing", read_only=True)


def test_reader_upgrades_a_store_written_by_an_older_version(tmp_path):
    """`evalsvc report` on a store from before the latest migrations: upgraded first, data kept."""
    import duckdb

    root = tmp_path / "s"
    with open_store(root) as store:
        store.db.execute("INSERT INTO runs (name) VALUES ('keep')")
        last_name, last_sql = MIGRATIONS[-1]
        store.db.execute("DELETE FROM migrations WHERE name = ?", [last_name])
    old = duckdb.connect(str(root / "evalsvc.duckdb"))
    for kind, name in _objects_created_by(last_sql):
        old.execute(f"DROP {kind} {name}")
    old.close()
    with open_store(root, read_only=True) as store:
        assert store.read_only
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.db.execute("SELECT name FROM runs").fetchall() == [("keep",)]


def _objects_created_by(sql: str) -> list[tuple[str, str]]:
    """(kind, name) of each table and sequence `sql` creates, tables first (they use the sequences)."""
    import re

    found = re.findall(r"CREATE (TABLE|SEQUENCE) (?:IF NOT EXISTS )?(\w+)", sql)
    return sorted(found, key=lambda item: item[0] != "TABLE")
