"""The grid view: any two axes of a run's samples as rows and columns, the others as filters, one page at a time.

Axes are `checkpoint` (the file stem without its EMA token, so an epoch's raw and EMA files share a
label: `purple-000003`), `weights` (base / raw / EMA), `seed`, `prompt` (prompt id) and every setting axis
(`evalsvc.setting`): `cfg`, `steps`, `sampler`, `size`, `lora_scale`, `clip_skip`, `precision`, `base` and
`stack`. A cell's CFG, steps, sampler and size are its own values (a suite's per-prompt values included);
LoRA strength, base and stack are those of the setting it was requested at, so the base model's image shows
at every strength it is the reference of. Every axis that is neither rows nor columns is pinned to one
value: the filter given for it, else its first value; `weights` alone is left free when not filtered, and
where a (row, column) then has several images the first in base, raw, EMA order is shown (so raw weights
by default, the base where it is the only one). Rows are paged (`rows_per_page`), so a large grid is never
one giant page; columns are all shown.

The run is read from SQL once (`run_axes`: every axis's values from one GROUPING SETS scan, the labels made
in Python from the few distinct stored values, and every image cell coded by them, `grid_cells.RunCells`);
`AxesCache` keeps that per run until the run changes. A page is then pinned, ranked and paged in memory, so
its build grows with the page, not with the run.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InputError
from ..setting import Setting
from .grid_cells import RunCells

AXES = ("checkpoint", "weights", "cfg", "steps", "sampler", "size", "lora_scale", "clip_skip", "precision", "base",
        "stack", "seed", "prompt")
AXIS_ALIASES = {"strength": "lora_scale"}
SETTING_AXES = ("steps", "sampler", "size", "lora_scale", "clip_skip", "precision", "base", "stack")  # and cfg


@dataclass(frozen=True)
class GridRequest:
    run: str
    rows: str = "checkpoint"
    columns: str = "seed"
    filters: Mapping[str, str] = field(default_factory=dict)
    page: int = 0
    rows_per_page: int = 8

    def __post_init__(self):
        object.__setattr__(self, "rows", AXIS_ALIASES.get(self.rows, self.rows))
        object.__setattr__(self, "columns", AXIS_ALIASES.get(self.columns, self.columns))
        object.__setattr__(self, "filters", {AXIS_ALIASES.get(a, a): v for a, v in self.filters.items()})
        for name, axis in (("rows", self.rows), ("columns", self.columns), *((f"filter {a}", a) for a in self.filters)):
            if axis not in AXES:
                raise InputError(f"{name}: unknown axis {axis!r} (axes: {', '.join(AXES)})")
        if self.rows == self.columns:
            raise InputError(f"rows and columns must be different axes, both are {self.rows!r}")
        if self.rows_per_page < 1 or self.page < 0:
            raise InputError(f"page must be >= 0 and rows_per_page >= 1, got {self.page} and {self.rows_per_page}")


@dataclass(frozen=True)
class GridImage:
    key: str
    image: str  # the store's relative image name, ab/<sha256>.png
    checkpoint: str
    weights: str
    epoch: int | None
    prompt: str
    seed: int
    labels: dict[str, str]  # every axis's value for this image

    def tooltip(self) -> str:
        setting = ", ".join(f"{a} {self.labels[a]}" for a in AXES[2:-2])
        return f"{self.checkpoint} ({self.weights}) | {self.prompt} | seed {self.seed} | {setting}"


@dataclass(frozen=True)
class GridPage:
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: dict[tuple[str, str], GridImage]
    pinned: dict[str, str]  # the value each other axis is pinned to
    choices: dict[str, tuple[str, ...]]  # every value of every axis, for the filters
    page: int
    pages: int


_RUN_ROWS = ("FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
             "JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN run_checkpoints rc ON rc.run = g.run "
             "AND rc.sha256 = c.sha256 JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id")
SOURCE = {"checkpoint": "w.checkpoint", "weights": "w.checkpoint", "cfg": "w.cfg", "steps": "w.steps",
          "sampler": "w.sampler", "size": "concat(w.width, 'x', w.height)", "lora_scale": "g.setting",
          "clip_skip": "w.clip_skip", "precision": "w.precision", "base": "g.setting", "stack": "g.setting",
          "seed": "w.seed", "prompt": "g.prompt_id"}  # the stored value each axis's label is made from
SOURCES = tuple(dict.fromkeys(SOURCE.values()))


def _number(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


@dataclass(frozen=True)
class RunAxes:
    """Every axis's values in one run: each stored value's label, and the labels in display order."""

    labels: dict[str, dict]  # axis -> stored value (SOURCE[axis]) -> label
    choices: dict[str, tuple[str, ...]]
    checkpoints: dict[str, tuple[str, int | None, int]]  # sha256 -> file name, epoch, place in base/raw/EMA order
    cells: RunCells  # every image cell, coded by these choices


def _labels(source: str, value, extra: tuple, names: Mapping[str, str], first_base: str | None) -> dict:
    """{axis: (label, sort order)} for the axes made from one distinct stored value."""
    if source == "w.checkpoint":
        file_name, role, ema, epoch, _ = extra
        stem = re.sub(r"\.(safetensors|ckpt|pt|pth|bin)$", "", file_name)
        stem = re.sub(r"-ema(?=-\d+$|$)", "", stem) if ema else stem  # purple-ema-000002, checkpoint-500-ema
        return {"checkpoint": (stem, (role != "base", epoch or 0, stem)),
                "weights": ("base" if role == "base" else ("EMA" if ema else "raw"), (role != "base", bool(ema)))}
    if source == "g.setting":
        setting = Setting.from_key(value)
        base = setting.value("base", names)
        return {"lora_scale": (setting.value("lora_scale"), _number(setting.value("lora_scale"))),
                "base": (base, (setting.base != first_base, base)),  # the base the LoRAs were trained on first
                "stack": (setting.value("stack", names), _number(setting.value("stack", names)))}
    if source == "g.prompt_id":
        return {"prompt": (value, (extra[-1], value))}
    axis = next(a for a, s in SOURCE.items() if s == source)
    if axis == "size":
        width, height = (int(v) for v in value.split("x"))
        return {"size": (value, (width * height, width))}
    label = f"{value:g}" if axis == "cfg" else str(value)
    return {axis: (label, _number(label))}


def run_axes(db, run: str) -> RunAxes:
    """Every axis's values in `run` from one grouped scan; InputError for a run without sampled images."""
    sets = ", ".join(f"({s})" for s in SOURCES)
    rows = db.execute(f"SELECT {', '.join(SOURCES)}, any_value(c.file_name), any_value(rc.role), any_value(c.ema), "
                      f"any_value(c.epoch), min(p.position) {_RUN_ROWS} WHERE g.run = ? GROUP BY GROUPING SETS ({sets})",
                      [run]).fetchall()
    if not rows:
        raise InputError(f"run {run!r} has no sampled images")
    names = dict(db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())
    first_base = (db.execute("SELECT base_sha256 FROM runs WHERE name = ?", [run]).fetchone() or [None])[0]
    labels: dict[str, dict] = {axis: {} for axis in AXES}
    firsts: dict[str, dict] = {axis: {} for axis in AXES}
    checkpoints = {}
    for row in rows:
        source, value = next((s, v) for s, v in zip(SOURCES, row) if v is not None)  # the columns are NOT NULL
        if source == "w.checkpoint":
            file_name, role, ema, epoch, _ = row[len(SOURCES):]
            checkpoints[value] = (file_name, epoch, 2 * (role != "base") + bool(ema))
        for axis, (label, order) in _labels(source, value, row[len(SOURCES):], names, first_base).items():
            labels[axis][value] = label
            if label not in firsts[axis] or order < firsts[axis][label]:
                firsts[axis][label] = order
    choices = {axis: tuple(sorted(firsts[axis], key=firsts[axis].get)) for axis in AXES}
    cells = RunCells.read(db, run, _RUN_ROWS, SOURCE, labels, choices, {c: v[2] for c, v in checkpoints.items()})
    return RunAxes(labels, choices, checkpoints, cells)


def _pins(request: GridRequest, axes: RunAxes) -> dict[str, str]:
    """The value each axis but the rows, the columns and (unfiltered) the weights is pinned to; a setting axis
    with one value in the run is not pinned (every cell has it)."""
    pinned = {}
    for axis in AXES:
        if axis in (request.rows, request.columns) or (axis == "weights" and axis not in request.filters):
            continue
        choices = axes.choices[axis]
        if axis in SETTING_AXES and len(choices) == 1 and axis not in request.filters:
            continue
        value = request.filters.get(axis, choices[0])
        if value not in choices:
            raise InputError(f"filter {axis}={value!r}: no such value (values: {', '.join(choices)})")
        pinned[axis] = value
    return pinned


def grid_page(db, request: GridRequest, axes: RunAxes | None = None) -> GridPage:
    """One page of the grid `request` asks for (`axes`: the run's, when the caller has them); unknown runs and
    filter values are refused."""
    axes = axes or run_axes(db, request.run)
    pinned = _pins(request, axes)
    pins = {axis: axes.choices[axis].index(label) for axis, label in pinned.items()}
    found = axes.cells.page(pins, request.rows, request.columns, request.page * request.rows_per_page,
                            request.rows_per_page)
    pages = max(1, math.ceil(found.rows / request.rows_per_page))
    if request.page >= pages:
        raise InputError(f"page {request.page} is past the last page ({pages - 1})")
    cells, shown = axes.cells, {}
    images = {}
    for r, c, index in found.shown:
        checkpoint, epoch, _ = axes.checkpoints[cells.checkpoints[index]]
        labels = {axis: axes.choices[axis][cells.ranks[axis][index]] for axis in AXES}
        row, column = axes.choices[request.rows][r], axes.choices[request.columns][c]
        shown[row] = None
        images[(row, column)] = GridImage(str(cells.keys[index]), str(cells.images[index]), checkpoint,
                                          labels["weights"], epoch, str(cells.prompts[index]),
                                          int(cells.seeds[index]), labels)
    columns = tuple(axes.choices[request.columns][c] for c in found.columns.tolist())
    return GridPage(tuple(shown), columns, images, pinned, axes.choices, request.page, pages)


class AxesCache:
    """Each run's `run_axes`, read again once the run gains cells, the store gains samples (or a later one),
    checkpoints or prompts: a warm grid page then costs one query for the page and one cheap count."""

    def __init__(self):
        self._runs: dict[str, tuple[tuple, RunAxes]] = {}
        self._lock = threading.Lock()

    def get(self, db, run: str) -> RunAxes:
        stamp = db.execute(
            "SELECT (SELECT count(*) FROM grid_cells WHERE run = ?), (SELECT count(*) FROM samples), "
            "(SELECT max(created_at) FROM samples), (SELECT count(*) FROM run_checkpoints WHERE run = ?), "
            "(SELECT count(*) FROM checkpoints), (SELECT count(*) FROM prompts)", [run, run]).fetchone()
        with self._lock:
            cached = self._runs.get(run)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        axes = run_axes(db, run)
        with self._lock:
            self._runs[run] = (stamp, axes)
        return axes
