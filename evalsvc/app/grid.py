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
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InputError
from ..setting import Setting

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


def _number(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _labelled(row, names: dict[str, str], settings: dict[str, Setting],
              first_base: str | None) -> tuple[dict[str, str], dict[str, tuple]]:
    """Every axis's label and sort order for one (image, setting) row."""
    (key, image, checkpoint, role, ema, epoch, prompt_id, prompt, seed, cfg, steps, sampler, width, height, clip_skip,
     precision, setting_key, position) = row
    setting = settings.setdefault(setting_key, Setting.from_key(setting_key))
    stem = re.sub(r"\.(safetensors|ckpt|pt|pth|bin)$", "", checkpoint)
    stem = re.sub(r"-ema(?=-\d+$)", "", stem) if ema else stem
    labels = {"checkpoint": stem, "weights": "base" if role == "base" else ("EMA" if ema else "raw"),
              "cfg": f"{cfg:g}", "steps": str(steps), "sampler": sampler, "size": f"{width}x{height}",
              "lora_scale": setting.value("lora_scale"), "clip_skip": str(clip_skip), "precision": precision,
              "base": setting.value("base", names), "stack": setting.value("stack", names),
              "seed": str(seed), "prompt": prompt_id}
    order = {axis: _number(label) for axis, label in labels.items()}
    order.update({"checkpoint": (role != "base", epoch or 0, stem), "weights": (role != "base", bool(ema)),
                  "prompt": (position, prompt_id), "size": (width * height, width),
                  "base": (setting.base != first_base, labels["base"])})  # the base the LoRAs were trained on first
    return labels, order


def grid_page(db, request: GridRequest) -> GridPage:
    """One page of the grid `request` asks for; unknown runs and filter values are refused."""
    rows = db.execute(
        "SELECT g.key, s.image_path, c.file_name, rc.role, c.ema, c.epoch, g.prompt_id, w.prompt, w.seed, w.cfg, "
        "w.steps, w.sampler, w.width, w.height, w.clip_skip, w.precision, g.setting, "
        "p.position FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN run_checkpoints rc ON rc.run = g.run "
        "AND rc.sha256 = c.sha256 JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id "
        "WHERE g.run = ? ORDER BY g.key, g.setting", [request.run]).fetchall()
    if not rows:
        raise InputError(f"run {request.run!r} has no sampled images")
    names = dict(db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())
    settings: dict[str, Setting] = {}
    first_base = (db.execute("SELECT base_sha256 FROM runs WHERE name = ?", [request.run]).fetchone() or [None])[0]
    labelled = [(*_labelled(row, names, settings, first_base), row) for row in rows]
    choices = {}
    for axis in AXES:
        firsts = {}
        for labels, order, _ in labelled:
            if labels[axis] not in firsts or order[axis] < firsts[labels[axis]]:
                firsts[labels[axis]] = order[axis]
        choices[axis] = tuple(sorted(firsts, key=lambda label: firsts[label]))
    pinned = {}
    for axis in AXES:
        if axis in (request.rows, request.columns) or (axis == "weights" and axis not in request.filters):
            continue
        if axis in SETTING_AXES and len(choices[axis]) == 1 and axis not in request.filters:
            continue  # one value in the run: nothing to pin
        value = request.filters.get(axis, choices[axis][0])
        if value not in choices[axis]:
            raise InputError(f"filter {axis}={value!r}: no such value (values: {', '.join(choices[axis])})")
        pinned[axis] = value
    chosen = [(labels, order, row) for labels, order, row in labelled
              if all(labels[a] == v for a, v in pinned.items())]
    present_rows = {labels[request.rows] for labels, _, _ in chosen}
    present_columns = {labels[request.columns] for labels, _, _ in chosen}
    row_labels = [label for label in choices[request.rows] if label in present_rows]
    column_labels = tuple(label for label in choices[request.columns] if label in present_columns)
    pages = max(1, math.ceil(len(row_labels) / request.rows_per_page))
    if request.page >= pages:
        raise InputError(f"page {request.page} is past the last page ({pages - 1})")
    shown = row_labels[request.page * request.rows_per_page:(request.page + 1) * request.rows_per_page]
    shown_set = set(shown)
    cells = {}
    for labels, order, row in chosen:
        r, c = labels[request.rows], labels[request.columns]
        if r in shown_set and ((r, c) not in cells or order["weights"] < cells[(r, c)][0]):
            key, image, checkpoint, _, _, epoch, _, prompt, seed = row[:9]
            cells[(r, c)] = (order["weights"], GridImage(key, image, checkpoint, labels["weights"], epoch,
                                                          prompt, int(seed), labels))
    return GridPage(tuple(shown), column_labels, {k: v for k, (_, v) in cells.items()}, pinned, choices,
                    request.page, pages)
