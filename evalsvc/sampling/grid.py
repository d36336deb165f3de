"""Grid planning: checkpoints x prompts x seeds x CFG values become work items in the store.

A work item's key is the sha256 of every input that changes its pixels, so the same cell in
two runs or two suites is sampled once, and a changed input is a new cell.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from ..catalog import CheckpointRow, run_base, run_checkpoints
from ..errors import InputError
from ..store.bulk import insert_rows
from ..suites import Suite
from .engine import CellSpec
from .models import native_size
from .samplers import resolve_sampler

ENGINE_VERSION = 1
DEFAULT_SEEDS = (1, 2)
DEFAULT_CFGS = (7.0,)
DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "dpmpp_2m_karras"
PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GridOptions:
    """Grid axes given on the command line; None means the suite's per-prompt value, else the default."""

    seeds: tuple[int, ...] | None = None
    cfgs: tuple[float, ...] | None = None
    steps: int | None = None
    sampler: str | None = None
    size: tuple[int, int] | None = None
    lora_scale: float = 1.0
    clip_skip: int = 1
    precision: str = "float32"

    def __post_init__(self):
        if self.seeds is not None and (not self.seeds or any(not 0 <= s < 2**32 for s in self.seeds)):
            raise InputError(f"--seeds must be integers in 0..{2**32 - 1}, got {self.seeds}")
        if self.cfgs is not None and (not self.cfgs or any(not (math.isfinite(c) and c > 0) for c in self.cfgs)):
            raise InputError(f"--cfg values must be numbers > 0, got {self.cfgs}")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise InputError(f"--steps must be in 1..1000, got {self.steps}")
        if self.sampler is not None:
            resolve_sampler(self.sampler)
        if self.size is not None and any(v < 64 or v % 8 for v in self.size):
            raise InputError(f"--size sides must be multiples of 8 and at least 64, got {self.size[0]}x{self.size[1]}")
        if not math.isfinite(self.lora_scale):
            raise InputError(f"--lora-scale must be a finite number, got {self.lora_scale}")
        if self.clip_skip < 1:
            raise InputError(f"--clip-skip must be at least 1, got {self.clip_skip}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class WorkItem:
    key: str
    checkpoint: CheckpointRow
    base: CheckpointRow | None
    cell: CellSpec
    lora_scale: float


def cell_key(checkpoint: CheckpointRow, base: CheckpointRow | None, cell: CellSpec, lora_scale: float,
             precision: str) -> str:
    is_lora = checkpoint.kind == "lora"
    payload = {
        "engine": ENGINE_VERSION,
        "checkpoint": checkpoint.sha256,
        "base": base.sha256 if (base is not None and checkpoint.kind in ("lora", "unet")) else None,
        "lora_scale": lora_scale if is_lora else None,
        "prompt": cell.prompt,
        "negative": cell.negative,
        "seed": cell.seed,
        "cfg": cell.cfg,
        "steps": cell.steps,
        "sampler": resolve_sampler(cell.sampler).name,
        "width": cell.width,
        "height": cell.height,
        "clip_skip": cell.clip_skip,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cells(suite: Suite, options: GridOptions, default_side: int):
    for prompt in suite.prompts:
        seeds = options.seeds or ((prompt.seed,) if prompt.seed is not None else DEFAULT_SEEDS)
        cfgs = options.cfgs or ((prompt.cfg,) if prompt.cfg is not None else DEFAULT_CFGS)
        if options.size is not None:
            width, height = options.size
        else:
            width, height = prompt.width or default_side, prompt.height or default_side
        for seed in seeds:
            for cfg in cfgs:
                yield prompt.id, CellSpec(
                    prompt=prompt.text, negative=prompt.negative, seed=seed, cfg=float(cfg),
                    steps=options.steps or prompt.steps or DEFAULT_STEPS,
                    sampler=resolve_sampler(options.sampler or prompt.sampler or DEFAULT_SAMPLER).name,
                    width=width, height=height, clip_skip=options.clip_skip,
                )


def grid_checkpoints(db, run: str) -> tuple[CheckpointRow | None, list[CheckpointRow]]:
    """The run's base and every usable checkpoint (the base included, as the reference row)."""
    registered = run_checkpoints(db, run)
    rows = [r for r in registered if r.status == "ok"]
    if not db.execute("SELECT 1 FROM runs WHERE name = ?", [run]).fetchone():
        raise InputError(f"unknown run {run!r}; register checkpoints with `evalsvc add PATH --run {run}`")
    if not rows:
        failed = "; ".join(f"{r.stem}: {r.error}" for r in registered if r.status != "ok")
        raise InputError(f"run {run!r} has no usable checkpoints" + (f" (failed: {failed}); add a file again to "
                                                                      "retry it" if failed else ""))
    base = run_base(db, run)
    if base is not None and base.status != "ok":
        raise InputError(f"run {run!r}: its base {base.stem} failed ({base.error}); add it again to retry it")
    if base is None and any(r.kind in ("lora", "unet") for r in rows):
        raise InputError(f"run {run!r} has LoRA or UNet-only checkpoints but no base model; "
                         f"add one with `evalsvc add --run {run} --base MODEL`")
    return base, rows


def register_suite(db, suite: Suite) -> None:
    if db.execute("SELECT 1 FROM suites WHERE hash = ?", [suite.content_hash]).fetchone():
        return
    db.execute("INSERT INTO suites (hash, name, source, description) VALUES (?, ?, ?, ?)",
               [suite.content_hash, suite.name, suite.source, suite.description])
    insert_rows(db, "prompts", ["suite_hash", "prompt_id", "position", "text", "negative", "tags", "role"],
                [[suite.content_hash, p.id, i, p.text, p.negative, list(p.tags), p.role]
                 for i, p in enumerate(suite.prompts)])


def grid_plan(db, run: str, suite: Suite, options: GridOptions) -> tuple[list[list], list[list]]:
    """The run's grid for `suite` as `work` and `grid_cells` rows, computed without writing."""
    base, rows = grid_checkpoints(db, run)
    side = native_size(base or rows[0]) if (base or rows) else 512
    cells = list(_cells(suite, options, side))
    work, links = [], []
    for row in rows:
        scale = options.lora_scale if row.kind == "lora" else 1.0
        for prompt_id, cell in cells:
            key = cell_key(row, base, cell, scale, options.precision)
            work.append([key, row.sha256, base.sha256 if base and row.kind in ("lora", "unet") else None,
                         cell.prompt, cell.negative, cell.seed, cell.cfg, cell.steps, cell.sampler,
                         cell.width, cell.height, scale, cell.clip_skip, options.precision])
            links.append([run, suite.content_hash, prompt_id, key])
    return work, links


def plan_grid(store, run: str, suite: Suite, options: GridOptions) -> list[str]:
    """Record the run's grid for `suite` as work items; returns the keys of this grid's cells."""
    work, links = grid_plan(store.db, run, suite, options)
    with store.transaction() as db:
        register_suite(db, suite)
        insert_rows(db, "work", ["key", "checkpoint", "base", "prompt", "negative", "seed", "cfg", "steps", "sampler",
                                 "width", "height", "lora_scale", "clip_skip", "precision"], work)
        insert_rows(db, "grid_cells", ["run", "suite_hash", "prompt_id", "key"], links)
    return [row[0] for row in work]
