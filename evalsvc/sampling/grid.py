"""Grid planning: checkpoints x prompts x seeds x settings become work items in the store.

A setting (see `evalsvc.setting`) is one value of every other axis: CFG, steps, sampler, size, LoRA
strength, clip skip, precision, base. The grid is the product of the axes given as lists. A work
item's key is the sha256 of every input that changes its pixels, so the same cell in two runs, two
suites or two settings is sampled once; its grid links record each setting it was requested at.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

from ..catalog import CheckpointRow, get_checkpoint, run_bases, run_checkpoints
from ..errors import InputError
from ..setting import Setting, StackedLora
from ..store.bulk import insert_rows
from ..suites import PromptSpec, Suite
from .engine import CellSpec
from .models import native_size
from .samplers import resolve_sampler

ENGINE_VERSION = 1
DEFAULT_SEEDS = (1, 2)
DEFAULT_CFGS = (7.0,)
DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "dpmpp_2m_karras"
DEFAULT_MAX_CELLS = 4096
PRECISIONS = ("float32", "bfloat16", "float16")


def _unique(name: str, values, notes: list[str]):
    """`values` without repeats (first occurrence kept), noting each repeat."""
    if values is None:
        return None
    out = []
    for value in values:
        if value in out:
            notes.append(f"{name}: {value if not isinstance(value, tuple) else 'x'.join(map(str, value))} "
                         "is given twice; sampled once")
        else:
            out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class GridOptions:
    """Grid axes given on the command line, each a list; None means the suite's per-prompt value, else the
    default."""

    seeds: tuple[int, ...] | None = None
    cfgs: tuple[float, ...] | None = None
    steps: tuple[int, ...] | None = None
    samplers: tuple[str, ...] | None = None
    sizes: tuple[tuple[int, int], ...] | None = None
    lora_scales: tuple[float, ...] = (1.0,)
    clip_skips: tuple[int, ...] = (1,)
    precision: str = "float32"
    stack: tuple[StackedLora, ...] = ()  # companion LoRAs applied to every cell (`--with-lora`)
    max_cells: int = DEFAULT_MAX_CELLS  # refuse a grid with more cells still to sample
    notes: tuple[str, ...] = field(default=(), compare=False)  # repeated values that were dropped

    def __post_init__(self):
        notes = list(self.notes)
        for name, flag in (("seeds", "--seeds"), ("cfgs", "--cfg"), ("steps", "--steps"), ("samplers", "--sampler"),
                           ("sizes", "--size"), ("lora_scales", "--lora-scale"), ("clip_skips", "--clip-skip")):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if value is not None and not value:
                raise InputError(f"{flag} needs at least one value")
            if name == "samplers" and value is not None:
                value = tuple(resolve_sampler(v).name for v in value)
            object.__setattr__(self, name, _unique(flag, value, notes))
        object.__setattr__(self, "notes", tuple(dict.fromkeys(notes)))
        if self.seeds is not None and any(not 0 <= s < 2**32 for s in self.seeds):
            raise InputError(f"--seeds must be integers in 0..{2**32 - 1}, got {_bad(self.seeds, lambda s: 0 <= s < 2**32)}")
        if self.cfgs is not None and any(not (math.isfinite(c) and c > 0) for c in self.cfgs):
            raise InputError(f"--cfg values must be numbers > 0, got {_bad(self.cfgs, lambda c: math.isfinite(c) and c > 0)}")
        if self.steps is not None and any(not 1 <= s <= 1000 for s in self.steps):
            raise InputError(f"--steps must be in 1..1000, got {_bad(self.steps, lambda s: 1 <= s <= 1000)}")
        for size in self.sizes or ():
            if any(v < 64 or v % 8 for v in size):
                raise InputError(f"--size sides must be multiples of 8 and at least 64, got {size[0]}x{size[1]}")
        if any(not math.isfinite(s) for s in self.lora_scales):
            raise InputError(f"--lora-scale must be finite numbers, got {_bad(self.lora_scales, math.isfinite)}")
        if any(c < 1 for c in self.clip_skips):
            raise InputError(f"--clip-skip must be at least 1, got {_bad(self.clip_skips, lambda c: c >= 1)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.max_cells, bool) or not isinstance(self.max_cells, int) or self.max_cells < 1:
            raise InputError(f"--max-cells must be a positive integer, got {self.max_cells!r}")

    def settings(self, suite: Suite, native_side: int, base: str | None) -> list[Setting]:
        """The product of the axes; an axis the user left out and some prompt sets is "per prompt" (None)."""
        prompts = suite.prompts

        def axis(given, per_prompt: bool, default):
            return given if given is not None else ((None,) if per_prompt else default)

        cfgs = axis(self.cfgs, any(p.cfg is not None for p in prompts), DEFAULT_CFGS)
        steps = axis(self.steps, any(p.steps is not None for p in prompts), (DEFAULT_STEPS,))
        samplers = axis(self.samplers, any(p.sampler is not None for p in prompts),
                        (resolve_sampler(DEFAULT_SAMPLER).name,))
        sizes = axis(self.sizes, any(p.width is not None or p.height is not None for p in prompts),
                     ((native_side, native_side),))
        return [Setting(cfg=None if cfg is None else float(cfg), steps=step, sampler=sampler,
                        size=None if size is None else tuple(size), lora_scale=float(scale), clip_skip=skip,
                        precision=self.precision, base=base, stack=self.stack)
                for cfg, step, sampler, size, scale, skip in itertools.product(
                    cfgs, steps, samplers, sizes, self.lora_scales, self.clip_skips)]


def _bad(values, ok) -> str:
    return ", ".join(str(v) for v in values if not ok(v))


@dataclass(frozen=True)
class WorkItem:
    key: str
    checkpoint: CheckpointRow
    base: CheckpointRow | None
    cell: CellSpec
    lora_scale: float


def cell_key(checkpoint: CheckpointRow, base: CheckpointRow | None, cell: CellSpec, lora_scale: float,
             precision: str, stack: tuple[StackedLora, ...] = ()) -> str:
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
    if stack:  # absent without one, so the keys of cells sampled before stacks existed are unchanged
        payload["stack"] = [[s.sha256, s.scale] for s in stack]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stack_text(stack: tuple[StackedLora, ...]) -> str | None:
    """A stack as `work.stack` stores it (None: no stack)."""
    return json.dumps([[s.sha256, s.scale] for s in stack]) if stack else None


def parse_stack(text: str | None) -> tuple[StackedLora, ...]:
    return tuple(StackedLora(sha, float(scale)) for sha, scale in json.loads(text)) if text else ()


def resolve_cell(setting: Setting, prompt: PromptSpec, seed: int, native_side: int) -> CellSpec:
    """The cell of `prompt` at `setting`: per-prompt axes take the prompt's value, else the default."""
    if setting.size is not None:
        width, height = setting.size
    else:
        width, height = prompt.width or native_side, prompt.height or native_side
    return CellSpec(
        prompt=prompt.text, negative=prompt.negative, seed=seed,
        cfg=setting.cfg if setting.cfg is not None else float(prompt.cfg or DEFAULT_CFGS[0]),
        steps=setting.steps or prompt.steps or DEFAULT_STEPS,
        sampler=setting.sampler or resolve_sampler(prompt.sampler or DEFAULT_SAMPLER).name,
        width=width, height=height, clip_skip=setting.clip_skip,
    )


def prompt_seeds(prompt: PromptSpec, options: GridOptions) -> tuple[int, ...]:
    return options.seeds or ((prompt.seed,) if prompt.seed is not None else DEFAULT_SEEDS)


def grid_checkpoints(db, run: str) -> tuple[list[CheckpointRow], list[CheckpointRow]]:
    """The run's bases (the one its LoRAs were trained on first) and every usable checkpoint (the bases included,
    each the reference row of its own settings)."""
    registered = run_checkpoints(db, run)
    rows = [r for r in registered if r.status == "ok"]
    if not db.execute("SELECT 1 FROM runs WHERE name = ?", [run]).fetchone():
        raise InputError(f"unknown run {run!r}; register checkpoints with `evalsvc add PATH --run {run}`")
    if not rows:
        failed = "; ".join(f"{r.stem}: {r.error}" for r in registered if r.status != "ok")
        raise InputError(f"run {run!r} has no usable checkpoints" + (f" (failed: {failed}); add a file again to "
                                                                      "retry it" if failed else ""))
    bases = run_bases(db, run)
    for base in bases:
        if base.status != "ok":
            raise InputError(f"run {run!r}: its base {base.stem} failed ({base.error}); add it again to retry it")
    if not bases and any(r.kind in ("lora", "unet") for r in rows):
        raise InputError(f"run {run!r} has LoRA or UNet-only checkpoints but no base model; "
                         f"add one with `evalsvc add --run {run} --base MODEL`")
    return bases, rows


def register_suite(db, suite: Suite) -> None:
    if db.execute("SELECT 1 FROM suites WHERE hash = ?", [suite.content_hash]).fetchone():
        return
    db.execute("INSERT INTO suites (hash, name, source, description, goal) VALUES (?, ?, ?, ?, ?)",
               [suite.content_hash, suite.name, suite.source, suite.description, suite.goal or None])
    insert_rows(db, "prompts", ["suite_hash", "prompt_id", "position", "text", "negative", "tags", "role"],
                [[suite.content_hash, p.id, i, p.text, p.negative, list(p.tags), p.role]
                 for i, p in enumerate(suite.prompts)])


WORK_COLUMNS = ["key", "checkpoint", "base", "prompt", "negative", "seed", "cfg", "steps", "sampler", "width",
                "height", "lora_scale", "clip_skip", "precision", "stack"]
LINK_COLUMNS = ["run", "suite_hash", "prompt_id", "key", "setting"]


@dataclass(frozen=True)
class GridPlan:
    """A run's grid for a suite as store rows: one `work` row per distinct cell, one link per (cell, setting)."""

    work: list[list]
    links: list[list]
    settings: list[Setting]
    notes: tuple[str, ...] = ()  # checkpoints refused on one base (another architecture)

    @property
    def keys(self) -> list[str]:
        return [row[0] for row in self.work]


def grid_plan(db, run: str, suite: Suite, options: GridOptions) -> GridPlan:
    """The run's grid for `suite`, computed without writing: every setting on every base of the run."""
    bases, rows = grid_checkpoints(db, run)
    work: dict[str, list] = {}
    links, settings, notes = [], [], []
    stack_rows = [get_checkpoint(db, s.sha256) for s in options.stack]
    for base in bases or [None]:
        arch = base.arch if base else rows[0].arch
        misfits = [r.stem for r in stack_rows if r.arch != arch]
        if misfits:
            notes.append(f"nothing is sampled on the base {(base or rows[0]).stem}: the stacked LoRA "
                         f"{', '.join(misfits)} is not {arch}")
            continue
        side = native_size(base or rows[0])
        on_base = options.settings(suite, side, base.sha256 if base else None)
        settings += on_base
        for row in rows:
            if row.role == "base" and row.sha256 != (base.sha256 if base else None):
                continue  # another base: the reference row of its own settings only
            uses_base = base is not None and row.kind in ("lora", "unet")
            if uses_base and row.arch != base.arch:
                notes.append(f"{row.stem} is not sampled on the base {base.stem}: it is {row.arch}, the base is "
                             f"{base.arch}")
                continue
            if options.stack and row.kind in ("full", "unet") and row.role != "base":
                notes.append(f"{row.stem} is not sampled with --with-lora: a stack applies to the base model and "
                             "LoRAs, not to other full or UNet checkpoints")
                continue
            for setting in on_base:
                scale = setting.lora_scale if row.kind == "lora" else 1.0
                for prompt in suite.prompts:
                    for seed in prompt_seeds(prompt, options):
                        cell = resolve_cell(setting, prompt, seed, side)
                        key = cell_key(row, base, cell, scale, setting.precision, setting.stack)
                        work.setdefault(key, [key, row.sha256, base.sha256 if uses_base else None, cell.prompt,
                                              cell.negative, cell.seed, cell.cfg, cell.steps, cell.sampler,
                                              cell.width, cell.height, scale, cell.clip_skip, setting.precision,
                                              stack_text(setting.stack)])
                        links.append([run, suite.content_hash, prompt.id, key, setting.key])
    return GridPlan(list(work.values()), links, settings, tuple(notes))


def pending_count(db, keys: list[str]) -> int:
    """How many of `keys` have no image yet (new, pending or failed)."""
    done = db.execute("SELECT count(*) FROM work WHERE key IN (SELECT unnest(?::VARCHAR[])) AND state = 'done'",
                      [keys]).fetchone()[0]
    return len(keys) - done


def check_size(plan: GridPlan, to_sample: int, options: GridOptions) -> None:
    if to_sample > options.max_cells:
        raise InputError(f"this grid has {len(plan.keys)} cells, {to_sample} of them still to sample, over "
                         f"--max-cells {options.max_cells} ({len(plan.settings)} settings); nothing was sampled. "
                         "Sample fewer values, or raise --max-cells")


def store_plan(store, suite: Suite, plan: GridPlan) -> None:
    with store.transaction() as db:
        register_suite(db, suite)
        insert_rows(db, "work", WORK_COLUMNS, plan.work)
        insert_rows(db, "grid_cells", LINK_COLUMNS, plan.links)


def plan_grid(store, run: str, suite: Suite, options: GridOptions) -> list[str]:
    """Record the run's grid for `suite` as work items; returns the keys of this grid's cells."""
    plan = grid_plan(store.db, run, suite, options)
    check_size(plan, pending_count(store.db, plan.keys), options)
    store_plan(store, suite, plan)
    return plan.keys
