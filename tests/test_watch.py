"""`evalsvc watch`: a checkpoint written slowly is evaluated once, after it is complete."""

import os
import subprocess
import sys
import time

from evalsvc.watch import FolderWatcher, WatchConfig


def test_a_partial_file_is_not_handed_out_until_complete(tmp_path, sd15_loras):
    data = sd15_loras[0].read_bytes()
    target = tmp_path / "mychar-000001.safetensors"
    target.write_bytes(data[: len(data) // 2])
    watcher = FolderWatcher(tmp_path, WatchConfig(interval=0.1, stable_seconds=1.0))
    now = time.time()
    assert watcher.poll(now) == []  # just written
    assert watcher.poll(now + 1.5) == []  # stable but its header says the data is truncated
    with open(target, "ab") as f:
        f.write(data[len(data) // 2:])
    now = time.time()
    assert watcher.poll(now) == []  # changed just now
    assert watcher.poll(now + 1.1) == [target]
    assert watcher.poll(now + 5) == []  # handed out once


def _watch(store, folder, base, max_idle):
    return subprocess.Popen(
        [sys.executable, "-m", "evalsvc", "watch", str(folder), "--store", str(store), "--run", "w", "--suite", "toy",
         "--base", str(base), "--seeds", "1", "--steps", "2", "--size", "64x64", "--interval", "0.2",
         "--stable-seconds", "1", "--max-idle", str(max_idle), "--no-progress"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_slowly_written_checkpoint_is_evaluated_once_and_a_restart_redoes_nothing(tmp_path, sd15_dir, sd15_loras):
    folder = tmp_path / "output"
    folder.mkdir()
    (folder / "broken-000009.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    store = tmp_path / "store"
    proc = _watch(store, folder, sd15_dir, max_idle=12)
    time.sleep(4)  # the watcher is up and scanning
    data = sd15_loras[0].read_bytes()
    target = folder / sd15_loras[0].name
    with open(target, "wb") as f:
        for i in range(6):
            f.write(data[i * len(data) // 6:(i + 1) * len(data) // 6])
            f.flush()
            time.sleep(0.4)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.count("new checkpoint") == 1 and target.name in out, out
    assert err.count("broken-000009.safetensors") == 1  # reported once, and the watch went on

    from evalsvc.store import open_store

    with open_store(store) as s:
        rows = s.db.execute("SELECT c.file_name, w.state, w.attempts FROM work w "
                            "JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE c.file_name = ?", [target.name]).fetchall()
        count = s.db.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert len(rows) == 4 and all(state == "done" and attempts == 1 for _, state, attempts in rows)

    proc = _watch(store, folder, sd15_dir, max_idle=3)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "new checkpoint" not in out and "known checkpoint" in out
    with open_store(store) as s:
        assert s.db.execute("SELECT count(*) FROM samples").fetchone()[0] == count
        assert s.db.execute("SELECT max(attempts) FROM work").fetchone()[0] == 1
