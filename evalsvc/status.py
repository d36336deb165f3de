"""What the store holds: runs, their checkpoints and how much of each grid is done."""

from __future__ import annotations

from .catalog import list_runs, run_bases, run_checkpoints


def store_status(db) -> dict:
    """`{"runs": [{"name", "checkpoints", "failed_checkpoints", "cells_done", "cells_failed", "cells_total"}]}`."""
    runs = []
    for name in list_runs(db):
        rows = run_checkpoints(db, name)
        bases = [b.stem for b in run_bases(db, name)]
        counts = dict(db.execute(
            "SELECT w.state, count(DISTINCT w.key) FROM grid_cells g JOIN work w ON w.key = g.key WHERE g.run = ? "
            "GROUP BY w.state",
            [name]).fetchall())
        suites = [r[0] for r in db.execute(
            "SELECT DISTINCT s.name FROM grid_cells g JOIN suites s ON s.hash = g.suite_hash WHERE g.run = ? ORDER BY 1",
            [name]).fetchall()]
        runs.append({
            "name": name,
            "checkpoints": len(rows),
            "failed_checkpoints": sum(r.status == "failed" for r in rows),
            "base": bases[0] if bases else None,  # the one the run's LoRAs were trained on
            "bases": bases,
            "suites": suites,
            "cells_done": counts.get("done", 0),
            "cells_failed": counts.get("failed", 0),
            "cells_total": sum(counts.values()),
        })
    images = db.execute("SELECT count(*), count(DISTINCT image_path) FROM samples").fetchone()
    return {"runs": runs, "samples": images[0], "image_files": images[1]}


def render_status(status: dict) -> str:
    if not status["runs"]:
        return "no runs yet: register checkpoints with `evalsvc add PATH --run NAME --base MODEL`"
    lines = [f"{'run':<24} {'checkpoints':>11} {'cells done':>12} {'failed':>7}  suites"]
    for run in status["runs"]:
        done = f"{run['cells_done']}/{run['cells_total']}"
        ckpts = f"{run['checkpoints']}" + (f" ({run['failed_checkpoints']} bad)" if run["failed_checkpoints"] else "")
        lines.append(f"{run['name']:<24} {ckpts:>11} {done:>12} {run['cells_failed']:>7}  {', '.join(run['suites'])}")
    lines.append(f"{status['samples']} samples in {status['image_files']} image files")
    return "\n".join(lines)
