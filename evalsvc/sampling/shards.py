"""Scale-out: ranks of `accelerate launch` sample disjoint checkpoints and write result files.

DuckDB allows one writing process per file, so ranks never write the store. Each rank puts its
PNGs into the content-addressed image folder (safe across processes: temp file, then rename)
and appends one JSON line per finished or failed cell to `shards/rank-<rank>-<pid>.jsonl`. The
store owner ingests those files: at the end of a distributed run, and before any later run
(so a crashed rank's finished cells are kept, and its images are not swept as orphans).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .runner import image_store


class ShardSink:
    """A ResultSink for a rank that may not write the store."""

    def __init__(self, store_layout, images, rank: int):
        self.images = images
        self.path = Path(store_layout.shards) / f"rank-{rank}-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, records: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def start(self, keys: list[str]) -> None:
        pass

    def done(self, results: list[tuple[str, bytes, str, float]]) -> None:
        records = []
        for key, data, infotext, seconds in results:
            rel, digest = self.images.put(data)
            records.append({"op": "done", "key": key, "image_path": rel, "image_sha256": digest,
                            "infotext": infotext, "seconds": seconds})
        self._append(records)

    def failed(self, keys: list[str], reason: str) -> None:
        self._append([{"op": "failed", "key": k, "reason": reason} for k in keys])

    def checkpoint_failed(self, sha256: str, reason: str) -> None:
        self._append([{"op": "checkpoint_failed", "sha256": sha256, "reason": reason}])


def _records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a killed rank; everything before it is whole
    return records


def ingest_shards(store) -> int:
    """Record every shard file's results in the store, then delete the file; returns cells ingested."""
    from ..catalog import mark_failed

    images_root = store.layout.images
    ingested = 0
    for path in sorted(Path(store.layout.shards).glob("rank-*.jsonl")):
        records = _records(path)
        with store.transaction() as db:
            for r in records:
                if r["op"] == "done" and (images_root / r["image_path"]).exists():
                    db.execute("INSERT INTO samples (key, image_path, image_sha256, infotext, seconds) "
                               "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               [r["key"], r["image_path"], r["image_sha256"], r["infotext"], r["seconds"]])
                    db.execute("UPDATE work SET state = 'done', lease_owner = NULL, error = NULL WHERE key = ?",
                               [r["key"]])
                    ingested += 1
                elif r["op"] == "failed":
                    db.execute("UPDATE work SET state = 'failed', error = ? WHERE key = ? AND state <> 'done'",
                               [r["reason"], r["key"]])
                elif r["op"] == "checkpoint_failed":
                    mark_failed(db, r["sha256"], r["reason"])
        path.unlink()
    return ingested


def shard_sink(store, rank: int) -> ShardSink:
    return ShardSink(store.layout, image_store(store), rank)


def distributed_world() -> int:
    """The number of processes `accelerate launch` (or torchrun) started; 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def sample_distributed(root, run: str, suite, options, config):
    """One rank of `accelerate launch evalsvc sample`: rank 0 plans, every rank samples its share of
    the checkpoints into a shard file, rank 0 ingests them. Returns this rank's report."""
    from dataclasses import replace

    import torch
    from accelerate import PartialState

    from ..store import open_store
    from .grid import grid_checkpoints, grid_plan, plan_grid
    from .imagestore import ImageStore
    from .runner import _pending, execute_on_bases, recover, stack_rows

    # Without a GPU, accelerate joins the ranks over gloo only when asked for the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        with open_store(root) as store:
            plan_grid(store, run, suite, options)
            recover(store)
    state.wait_for_everyone()
    with open_store(root, create=False, read_only=True) as store:
        keys = grid_plan(store.db, run, suite, options).keys
        bases, rows = grid_checkpoints(store.db, run)
        pending = _pending(store.db, keys)
        stacked = stack_rows(store.db, pending)
        layout = store.layout
    by_sha = {r.sha256: r for r in rows}
    shas = sorted(sha for sha in pending if sha in by_sha)
    mine = {sha: pending[sha] for i, sha in enumerate(shas) if i % state.num_processes == state.process_index}
    sink = ShardSink(layout, ImageStore(layout.images, layout.tmp), state.process_index)
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    rank_config = replace(config, device=config.device or device,
                          progress=config.progress and state.is_main_process)
    report = execute_on_bases(mine, {**by_sha, **stacked}, bases, options, rank_config, sink)
    state.wait_for_everyone()
    if state.is_main_process:
        with open_store(root) as store:
            ingest_shards(store)
    report.cells_total = len(keys)
    return report
