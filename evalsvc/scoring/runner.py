"""`evalsvc score`: compute each registered metric for the sampled images of a run, resumably.

An image-level value is stored once per (image cell, metric) and recomputed only when the scorer's
version changes; a set-level value is recomputed when its group gained images. Each scorer's rows
are written in one transaction, so an interrupted run keeps every scorer it finished (and every
embedding batch it computed). A scorer whose weights or inputs are missing is skipped with one line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..errors import InputError
from ..store.bulk import insert_rows
from .backbone import MissingWeights
from .cells import run_cells
from .registry import ScoreConfig, ScoringContext, SetScoreRow, scorer_registry
from .run_settings import remember, settle


@dataclass
class ScoreReport:
    computed: dict[str, int] = field(default_factory=dict)  # metric -> values written now
    skipped: list[str] = field(default_factory=list)  # one line per skipped scorer
    timings: dict[str, float] = field(default_factory=dict)  # metric -> seconds
    seconds: float = 0.0
    settings: str | None = None  # the line naming settings taken from the run's last scoring


def _selected(metrics: tuple[str, ...] | None) -> list:
    registry = scorer_registry()
    if metrics is None:
        return [cls() for cls in registry.values()]
    unknown = [m for m in metrics if m not in registry]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    return [registry[m]() for m in metrics]


def _image_cells_to_score(store, scorer, version: str, cells):
    done = {key for key, in store.db.execute(
        "SELECT key FROM scores WHERE metric = ? AND version = ?", [scorer.name, version]).fetchall()}
    todo = {}
    for c in cells:  # an image in several settings is scored once
        if c.key not in done:
            todo.setdefault(c.key, c)
    return list(todo.values())


def _store_image_rows(store, scorer, version: str, rows) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM scores WHERE metric = ? AND key IN (SELECT unnest(?::VARCHAR[]))",
                   [scorer.name, [r.key for r in rows]])
        insert_rows(db, "scores", ["key", "metric", "version", "value", "details"],
                    [[r.key, scorer.name, version, r.value, json.dumps(r.details or {})] for r in rows])


def _store_set_rows(store, run: str, scorer, version: str, rows: list[SetScoreRow]) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM set_scores WHERE run = ? AND metric = ?", [run, scorer.name])
        insert_rows(db, "set_scores", ["run", "checkpoint", "setting", "prompt_id", "metric", "version", "value", "std",
                                       "n", "details"],
                    [[run, r.checkpoint, r.setting.key, r.prompt_id, scorer.name, version, r.value, r.std, r.n,
                      json.dumps(r.details or {})] for r in rows])


def _set_scores_current(store, run: str, scorer, version: str, cells) -> bool:
    """Whether the stored groups of this set-level scorer cover exactly the images there are now."""
    stored = store.db.execute("SELECT min(version), max(version), count(*) FROM set_scores WHERE run = ? "
                              "AND metric = ?", [run, scorer.name]).fetchone()
    if not stored[2] or stored[0] != version or stored[1] != version:
        return False
    signature = store.db.execute("SELECT details->>'$.cells' FROM set_scores WHERE run = ? AND metric = ? LIMIT 1",
                                 [run, scorer.name]).fetchone()[0]
    return signature == str(len(cells))


def score_run(store, run: str, config: ScoreConfig = ScoreConfig()) -> ScoreReport:
    """Score every sampled image of `run` with the selected metrics; returns what was computed and skipped."""
    started = time.time()
    if store.db.execute("SELECT count(*) FROM runs WHERE name = ?", [run]).fetchone()[0] == 0:
        raise InputError(f"no run named {run!r} in the store")
    config, settings_line = settle(store.db, run, config)
    cells = run_cells(store, run)
    report = ScoreReport(settings=settings_line)
    ctx = ScoringContext(store, run, cells, config)
    for scorer in _selected(config.metrics):
        scorer_started = time.time()
        reason = scorer.skip_reason(ctx)
        if reason is not None:
            report.skipped.append(reason)
            continue
        try:
            version = scorer.stored_version(ctx)
            if scorer.level == "image":
                todo = _image_cells_to_score(store, scorer, version, cells)
                rows = scorer.compute(ctx, todo) if todo else []
                _store_image_rows(store, scorer, version, rows)
            else:
                if _set_scores_current(store, run, scorer, version, cells):
                    rows = []
                else:
                    rows = [SetScoreRow(r.checkpoint, r.setting, r.prompt_id, r.value, r.n, r.std,
                                        {**(r.details or {}), "cells": str(len(cells))})
                            for r in scorer.compute(ctx, cells)]
                    _store_set_rows(store, run, scorer, version, rows)
        except MissingWeights as exc:
            report.skipped.append(f"{scorer.name} skipped: {exc}")
            continue
        report.computed[scorer.name] = len(rows)
        report.timings[scorer.name] = time.time() - scorer_started
    with store.transaction() as db:
        remember(db, run, config)
    report.seconds = time.time() - started
    return report
