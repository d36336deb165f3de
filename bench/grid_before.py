"""The grid page as `evalsvc.app.grid.grid_page` built it before the SQL rewrite: the competitor of `grid_page.py`.

It reads every (image, setting) row of the run, labels each in Python, and pins and pages in Python, so its
build grows with the run. The tests check the SQL page against it (tests/test_app_grid.py).
"""

from __future__ import annotations

import math
import re

from evalsvc.app.grid import AXES, SETTING_AXES, GridImage, GridPage, GridRequest
from evalsvc.errors import InputError
from evalsvc.setting import Setting


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
    stem = re.sub(r"-ema(?=-\d+$|$)", "", stem) if ema else stem
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


def grid_page_before(db, request: GridRequest) -> GridPage:
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
