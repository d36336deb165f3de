"""SIGKILL the sampler mid-grid, several times; the rerun finishes with every cell exactly once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evalsvc.cli import main


def _png_count(store: Path) -> int:
    return sum(1 for _ in (store / "images").glob("*/*.png"))


def test_sigkill_mid_grid_then_rerun_completes_exactly_once(tmp_path, sd15_dir, sd15_loras):
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), *map(str, sd15_loras)]) == 0
    sample = [sys.executable, "-m", "evalsvc", "sample", "--store", str(store), "--run", "r", "--suite", "toy",
              "--seeds", "1", "--cfg", "3,7", "--steps", "3", "--sampler", "euler", "--size", "64x64",
              "--batch-size", "3", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # Kill while loading, then after the 1st, 4th and 9th image file appeared.
    for kill_after in (None, 1, 4, 9):
        proc = subprocess.Popen(sample, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        start = _png_count(store)
        while time.monotonic() < deadline and proc.poll() is None:
            if kill_after is None and time.monotonic() > deadline - 237:
                break
            if kill_after is not None and _png_count(store) >= start + kill_after:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sampler finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    assert subprocess.run(sample, env=env).returncode == 0

    from evalsvc.store import open_store

    with open_store(store) as s:
        keys = s.db.execute("SELECT key FROM grid_cells WHERE run = 'r'").fetchall()
        states = dict(s.db.execute("SELECT state, count(*) FROM work GROUP BY state").fetchall())
        samples = s.db.execute("SELECT key, image_path FROM samples").fetchall()
        attempts = s.db.execute("SELECT max(attempts) FROM work").fetchone()[0]
    assert len(keys) == 32  # 4 checkpoints x 4 prompts x 1 seed x 2 CFG
    assert states == {"done": 32}
    assert len(samples) == 32 and len({k for k, _ in samples}) == 32
    assert attempts >= 2  # some cells really were interrupted and redone
    referenced = {p for _, p in samples}
    on_disk = {p.relative_to(store / "images").as_posix() for p in (store / "images").glob("*/*.png")}
    assert on_disk == referenced  # no orphans, nothing missing
    assert not list((store / "tmp").iterdir())
