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
        last_name, last_sql = next(m for m in reversed(MIGRATIONS) if isinstance(m[1], str))
        store.db.execute("DELETE FROM migrations WHERE name = ?", [last_name])
    old = duckdb.connect(str(root / "evalsvc.duckdb"))
    for statement in _undo_statements(last_sql):
        old.execute(statement)
    old.close()
    with open_store(root, read_only=True) as store:
        assert store.read_only
        assert store.applied_migrations() == [name for name, _ in MIGRATIONS]
        assert store.db.execute("SELECT name FROM runs").fetchall() == [("keep",)]


def _undo_statements(sql: str) -> list[str]:
    """Statements undoing `sql`: drop the columns it adds, then the tables and sequences it creates (tables first: they use the sequences)."""
    import re

    columns = re.findall(r"ALTER TABLE (\w+) ADD COLUMN (?:IF NOT EXISTS )?(\w+)", sql)
    created = re.findall(r"CREATE (TABLE|SEQUENCE) (?:IF NOT EXISTS )?(\w+)", sql)
    created.sort(key=lambda item: item[0] != "TABLE")
    undo = [f"ALTER TABLE {table} DROP COLUMN {column}" for table, column in columns]
    undo += [f"DROP {kind} {name}" for kind, name in created]
    assert undo, "the last SQL migration neither creates nor adds anything this test knows how to undo"
    return undo


def _store_before(root, migration: str):
    """A store as an evalsvc from before `migration` wrote it: every earlier migration applied, none later."""
    import duckdb

    root.mkdir(parents=True)
    db = duckdb.connect(str(root / "evalsvc.duckdb"))
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)")
    for name, sql in MIGRATIONS:
        if name == migration:
            break
        db.execute(sql)
        db.execute("INSERT INTO migrations (name) VALUES (?)", [name])
    return db


def test_settings_migration_keeps_every_cell_and_links_the_base_at_each_lora_strength(tmp_path):
    """A store from before settings: cells keep their keys, each link gains its setting, and the base's cells
    become the reference at every LoRA strength the run's LoRAs were sampled at."""
    from evalsvc.setting import Setting

    root = tmp_path / "old"
    db = _store_before(root, "0010_settings")
    db.execute("INSERT INTO runs (name, base_sha256) VALUES ('r', 'b' || repeat('0', 63))")
    base, lora = "b" + "0" * 63, "a" + "0" * 63
    for sha, kind in ((base, "diffusers"), (lora, "lora")):
        db.execute("INSERT INTO checkpoints (sha256, path, file_name, kind, arch, ema) VALUES (?, ?, ?, ?, 'sd15', false)",
                   [sha, f"/x/{kind}", f"{kind}.safetensors", kind])
        db.execute("INSERT INTO run_checkpoints VALUES ('r', ?, ?)", [sha, "base" if sha == base else "candidate"])
    cells = [("kb", base, None, 1.0), ("k6", lora, base, 0.6), ("k10", lora, base, 1.0)]
    for key, sha, on, scale in cells:
        db.execute("INSERT INTO work (key, checkpoint, base, prompt, negative, seed, cfg, steps, sampler, width, height, "
                   "lora_scale, clip_skip, precision, state) VALUES (?, ?, ?, 'a cat', '', 1, 5, 20, 'euler', 64, 64, ?, "
                   "1, 'float32', 'done')", [key, sha, on, scale])
        db.execute("INSERT INTO grid_cells VALUES ('r', 'suite', 'p1', ?)", [key])
        db.execute("INSERT INTO samples (key, image_path, image_sha256, infotext) VALUES (?, ?, ?, '')",
                   [key, f"{key}.png", key])
    db.execute("INSERT INTO set_scores (run, checkpoint, cfg, prompt_id, metric, version, value, n) "
               "VALUES ('r', ?, 5, 'p1', 'diversity', '1', 0.5, 2), ('r', ?, 5, 'p1', 'diversity', '1', 0.4, 2)",
               [base, lora])
    db.close()

    with open_store(root) as store:
        links = store.db.execute("SELECT key, setting FROM grid_cells ORDER BY key, setting").fetchall()
        kept = store.db.execute("SELECT key FROM samples ORDER BY key").fetchall()
        set_rows = store.db.execute("SELECT checkpoint, setting FROM set_scores ORDER BY checkpoint").fetchall()
    on_base = dict(cfg=5.0, steps=20, sampler="euler", size=(64, 64), base=base)
    at6, at10 = Setting(lora_scale=0.6, **on_base), Setting(lora_scale=1.0, **on_base)
    assert links == sorted([("k10", at10.key), ("k6", at6.key), ("kb", at10.key), ("kb", at6.key)])
    assert kept == [("k10",), ("k6",), ("kb",)]
    # the base's set score is over the same images at both strengths: kept at each; the LoRA's pooled two: dropped
    assert sorted(set_rows) == sorted([(base, at6.key), (base, at10.key)])
