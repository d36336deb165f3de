"""Executes a planned grid: checkpoint by checkpoint, batch by batch, each result recorded once.

Crash safety: a batch's cells are marked running, sampled, their PNGs written (temp file, then
rename), and only then recorded with their state set to done in one transaction. `recover`
runs before any sampling: cells left running by a killed process go back to pending, and files
no row refers to are removed, so a rerun finishes the grid with every cell exactly once. A config's
observer (`evalsvc.progress`) hears of each batch and may stop the work before the next one
(`Cancelled`): the cells finished so far are recorded, the rest stay pending for a rerun.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..catalog import CheckpointRow, mark_failed
from ..errors import CheckpointError, InputError
from ..progress import Progress, duration
from ..store.bulk import insert_rows
from ..suites import Suite
from .engine import CellSpec, PromptCache, decode_latents, denoise
from ..setting import StackedLora
from .grid import (GridOptions, GridPlan, check_size, grid_checkpoints, grid_plan, parse_stack, pending_count,
                   store_plan)
from .comfy_workflow import comfy_chunks
from .imagestore import ImageStore, png_bytes
from .infotext import Infotext, LoraUse
from .models import CheckpointSwitcher, default_device


@dataclass(frozen=True)
class RunnerConfig:
    """How to execute a grid; none of it changes pixels except the precision (a grid option)."""

    device: str | None = None
    batch_size: int | None = None
    progress: bool = True
    observer: Progress | None = field(default=None, compare=False)  # told each batch; may stop the work

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass
class SampleReport:
    cells_total: int = 0
    sampled: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    preview: str = ""  # the grid's size and time estimate, printed before sampling

    def add(self, part: "SampleReport") -> None:
        """Count another pass's cells into this report."""
        self.sampled += part.sampled
        self.failed += part.failed
        self.failures += part.failures
        self.seconds += part.seconds


@dataclass(frozen=True)
class PendingCell:
    key: str
    cell: CellSpec
    lora_scale: float
    base: str | None = None  # the base a LoRA or UNet-only cell is sampled on
    stack: tuple[StackedLora, ...] = ()  # companion LoRAs applied on top


def image_store(store) -> ImageStore:
    return ImageStore(store.layout.images, store.layout.tmp)


def recover(store) -> int:
    """Ingest results of earlier distributed ranks, return interrupted work to pending and remove
    files no row refers to; returns the number of files removed."""
    from .shards import ingest_shards

    ingest_shards(store)
    with store.transaction() as db:
        db.execute("UPDATE work SET state = 'pending', lease_owner = NULL WHERE state = 'running'")
    referenced = {r[0] for r in store.db.execute("SELECT image_path FROM samples").fetchall()}
    return image_store(store).sweep(referenced)


def _pending(db, keys: list[str]) -> dict[str, list[PendingCell]]:
    """The cells among `keys` not done yet, per checkpoint, in a stable order."""
    rows = db.execute(
        "SELECT w.key, w.checkpoint, w.prompt, w.negative, w.seed, w.cfg, w.steps, w.sampler, w.width, w.height, "
        "w.clip_skip, w.lora_scale, w.base, w.stack FROM work w WHERE w.key IN (SELECT unnest(?::VARCHAR[])) "
        "AND w.state IN ('pending', 'failed') "
        "ORDER BY w.steps, w.sampler, w.width, w.height, w.prompt, w.seed, w.cfg",
        [keys],
    ).fetchall()
    by_checkpoint: dict[str, list[PendingCell]] = defaultdict(list)
    for key, checkpoint, prompt, negative, seed, cfg, steps, sampler, width, height, clip_skip, scale, base, stack \
            in rows:
        cell = CellSpec(prompt, negative, seed, cfg, steps, sampler, width, height, clip_skip)
        by_checkpoint[checkpoint].append(PendingCell(key, cell, scale, base, parse_stack(stack)))
    return by_checkpoint


def default_batch_size(device: str) -> int:
    return 32 if device.startswith("cuda") else 24


def batch_lengths(count: int, size: int) -> list[int]:
    """Split `count` cells into as few batches as `size` allows, of nearly equal length."""
    batches = -(-count // size)
    if not batches:
        return []
    base, extra = divmod(count, batches)
    return [base + 1] * extra + [base] * (batches - extra)


def _batches(cells: list[PendingCell], size: int):
    groups: dict[tuple, list[PendingCell]] = defaultdict(list)
    for pending in cells:
        groups[pending.cell.batch_group].append(pending)
    for group in groups.values():
        start = 0
        for length in batch_lengths(len(group), size):
            yield group[start:start + length]
            start += length


def infotext_for(cell: CellSpec, row: CheckpointRow, base: CheckpointRow | None, lora_scale: float,
                 stack: tuple[tuple[CheckpointRow, float], ...] = (), precision: str = "float32",
                 device: str = "cpu") -> Infotext:
    """What made the cell's image: A1111 and ComfyUI name the base a LoRA (or UNet-only) cell was sampled on
    as the model, and every LoRA in effect (the cell's own, then the stack) with its strength."""
    model = base if row.kind in ("lora", "unet") and base is not None else row
    loras = ([(row, lora_scale)] if row.kind == "lora" else []) + list(stack)
    return Infotext(
        prompt=cell.prompt, negative=cell.negative, steps=cell.steps, sampler=cell.sampler, cfg=cell.cfg,
        seed=cell.seed, width=cell.width, height=cell.height,
        # A1111 hashes single files only; a diffusers folder's hash is ours, which no other tool shows.
        model_hash=None if model.kind == "diffusers" else model.model_hash, model=model.stem,
        # ComfyUI loads single files: a folder is named as the file it converts to.
        model_file=f"{model.stem}.safetensors" if model.kind == "diffusers" else model.file_name,
        unet_file=row.file_name if row.kind == "unet" else None,
        clip_skip=cell.clip_skip, arch=model.arch,
        loras=tuple(LoraUse(r.stem, r.stem + Path(r.file_name).suffix, s, r.short_hash) for r, s in loras),
        precision=precision, device=torch.device(device).type,
    )


def png_chunks(info: Infotext) -> dict[str, str]:
    """Every text chunk of a sampled PNG: A1111's infotext, then ComfyUI's graph."""
    return {"parameters": info.render(), **comfy_chunks(info)}


class _Progress:
    """The terminal's progress bar (when enabled) and the config's observer, told of the same batches."""

    def __init__(self, total: int, enabled: bool, observer: Progress | None):
        self.bar = None
        self.observer = observer or Progress()
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc="sampling", dynamic_ncols=True)

    def update(self, n: int, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(n)
        self.observer.advance(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ResultSink:
    """Where finished cells go: straight into the store (the owner) or into a shard file."""

    def __init__(self, store):
        self.store = store
        self.images = image_store(store)

    def start(self, keys: list[str]) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE work SET state = 'running', lease_owner = ?, attempts = attempts + 1 "
                       "WHERE key IN (SELECT unnest(?::VARCHAR[]))", [str(os.getpid()), keys])

    def done(self, results: list[tuple[str, bytes, str, float]]) -> None:
        rows = []
        for key, data, infotext, seconds in results:
            rel, digest = self.images.put(data)
            rows.append((key, rel, digest, infotext, seconds))
        with self.store.transaction() as db:
            insert_rows(db, "samples", ["key", "image_path", "image_sha256", "infotext", "seconds"],
                        [list(r) for r in rows])
            db.execute("UPDATE work SET state = 'done', lease_owner = NULL, error = NULL "
                       "WHERE key IN (SELECT unnest(?::VARCHAR[]))", [[r[0] for r in rows]])

    def failed(self, keys: list[str], reason: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE work SET state = 'failed', lease_owner = NULL, error = ? "
                       "WHERE key IN (SELECT unnest(?::VARCHAR[]))", [reason, keys])

    def checkpoint_failed(self, sha256: str, reason: str) -> None:
        with self.store.transaction() as db:
            mark_failed(db, sha256, reason)


def execute(pending: dict[str, list[PendingCell]], rows: dict[str, CheckpointRow], base: CheckpointRow | None,
            options: GridOptions, config: RunnerConfig, sink: ResultSink) -> SampleReport:
    """Sample every pending cell, checkpoint by checkpoint, loading the base once."""
    report = SampleReport()
    device = config.device or default_device()
    batch_size = config.batch_size or default_batch_size(device)
    dtype = getattr(torch, options.precision)
    groups = [(sha, scale, stack, [c for c in pending[sha] if (c.lora_scale, c.stack) == (scale, stack)])
              for sha in pending for scale, stack in sorted({(c.lora_scale, c.stack) for c in pending[sha]},
                                                            key=lambda v: (len(v[1]), v[0], str(v[1])))]
    groups.sort(key=lambda g: (g[0] != (base.sha256 if base else None), rows[g[0]].ema, rows[g[0]].epoch or 0,
                               rows[g[0]].file_name, len(g[2]), g[1]))
    progress = _Progress(sum(len(v) for v in pending.values()), config.progress, config.observer)
    switcher = None
    cache = PromptCache()
    start = time.perf_counter()
    dead: set[str] = set()  # checkpoints that failed to load
    try:
        for sha, scale, stack_spec, cells in groups:
            progress.observer.check()  # before loading the next checkpoint
            row = rows[sha]
            stack = tuple((rows[s.sha256], s.scale) for s in stack_spec)
            if sha in dead:
                sink.failed([c.key for c in cells], "its checkpoint failed to load")
                report.failed += len(cells)
                progress.update(len(cells), row.stem)
                continue
            try:
                if switcher is None:
                    switcher = CheckpointSwitcher(base or row, device, dtype)
                pipe, te_state = switcher.activate(row, scale, stack)
            except CheckpointError as exc:  # told once, with the other failures, when sampling ends
                dead.add(sha)
                sink.checkpoint_failed(sha, exc.reason)
                sink.failed([c.key for c in cells], exc.reason)
                report.failed += len(cells)
                report.failures.append((row.path, exc.reason))
                progress.update(len(cells), row.stem)
                if switcher is None and (base is None or sha == base.sha256):
                    break
                continue
            for batch in _batches(cells, batch_size):
                progress.observer.check()  # between batches: every cell finished so far is recorded
                keys = [p.key for p in batch]
                sink.start(keys)
                t0 = time.perf_counter()
                images = decode_latents(pipe, denoise(pipe, [p.cell for p in batch], cache, te_state))
                per_image = (time.perf_counter() - t0) / len(batch)
                results = []
                for p, img in zip(batch, images):
                    chunks = png_chunks(infotext_for(p.cell, row, base, p.lora_scale, stack, options.precision,
                                                     device))
                    results.append((p.key, png_bytes(img, chunks), chunks["parameters"], per_image))
                sink.done(results)
                report.sampled += len(batch)
                progress.update(len(batch), row.stem)
    finally:
        if switcher is not None:
            switcher.close()
        progress.close()
    report.seconds = time.perf_counter() - start
    return report


def estimate_seconds(db, keys: list[str]) -> float | None:
    """Seconds to sample the cells among `keys` without an image, from this store's own timings: the
    median seconds per step and pixel of the images it sampled before (None when it has none)."""
    rate = db.execute("SELECT median(s.seconds / (w.steps * w.width * w.height)) FROM samples s "
                      "JOIN work w ON w.key = s.key WHERE s.seconds > 0").fetchone()[0]
    if rate is None:
        return None
    work = db.execute("SELECT sum(steps * width * height) FROM work WHERE key IN (SELECT unnest(?::VARCHAR[])) "
                      "AND state <> 'done'", [keys]).fetchone()[0]
    return float(rate) * float(work or 0)


def grid_preview(db, plan: GridPlan, to_sample: int) -> str:
    """`240 cells (6 settings x 40 per checkpoint...), 120 to sample, about 3 min by this store's timings`."""
    estimate = estimate_seconds(db, plan.keys) if to_sample else 0.0
    when = ("no timings in this store yet" if estimate is None
            else f"about {duration(estimate)} by this store's timings")
    return (f"grid: {len(plan.keys)} cells over {len(plan.settings)} setting(s); {to_sample} to sample"
            + (f", {when}" if to_sample else ""))


def execute_on_bases(pending: dict[str, list[PendingCell]], rows: dict[str, CheckpointRow],
                     bases: list[CheckpointRow], options: GridOptions, config: RunnerConfig,
                     sink: ResultSink) -> SampleReport:
    """`execute` once per base: the first base's pipeline samples every cell except the other bases' own cells and
    their LoRA and UNet-only cells, which each of those samples on its own pipeline. `rows` holds every checkpoint the
    cells name, their companion LoRAs included (`stack_rows`)."""
    first = bases[0] if bases else None
    by_sha = {b.sha256: b for b in bases}
    groups: dict[str | None, dict[str, list[PendingCell]]] = defaultdict(lambda: defaultdict(list))
    for sha, cells in pending.items():
        for cell in cells:
            on = cell.base if cell.base is not None else (sha if sha in by_sha else None)  # a base's own cells
            groups[None if first is not None and on == first.sha256 else on][sha].append(cell)
    report = SampleReport()
    for on, part in sorted(groups.items(), key=lambda g: g[0] is not None):
        report.add(execute(dict(part), rows, by_sha[on] if on is not None else first, options, config, sink))
    return report


def stack_rows(db, pending: dict[str, list[PendingCell]]) -> dict[str, CheckpointRow]:
    """The catalog rows of the companion LoRAs the pending cells stack."""
    from ..catalog import get_checkpoint

    shas = {s.sha256 for cells in pending.values() for c in cells for s in c.stack}
    return {sha: get_checkpoint(db, sha) for sha in shas}


def _started(config: RunnerConfig, pendings: list[dict[str, list[PendingCell]]]) -> None:
    """Tell the config's observer how many cells this pass samples."""
    if config.observer is not None:
        config.observer.start(sum(len(cells) for pending in pendings for cells in pending.values()))


def sample_run(store, run: str, suite: Suite, options: GridOptions, config: RunnerConfig = RunnerConfig()) -> SampleReport:
    """Plan the grid of `run` on `suite`, then sample every cell not yet done."""
    plan = grid_plan(store.db, run, suite, options)
    to_sample = pending_count(store.db, plan.keys)
    check_size(plan, to_sample, options)
    store_plan(store, suite, plan)
    preview = "\n".join([*plan.notes, grid_preview(store.db, plan, to_sample)])
    if config.progress:
        print(preview, flush=True)
    keys = plan.keys
    recover(store)
    bases, rows = grid_checkpoints(store.db, run)
    by_sha = {r.sha256: r for r in rows}
    pending = _pending(store.db, keys)
    pending = {sha: cells for sha, cells in pending.items() if sha in by_sha}
    rows = {**by_sha, **stack_rows(store.db, pending)}
    _started(config, [pending])
    report = execute_on_bases(pending, rows, bases, options, config, ResultSink(store))
    report.cells_total = len(keys)
    report.preview = preview
    return report


def sample_queued(store, run: str, config: RunnerConfig = RunnerConfig()) -> SampleReport:
    """Sample the cells already queued for `run` (by the trainer, `watch` or an earlier plan) not done yet."""
    recover(store)
    bases, rows = grid_checkpoints(store.db, run)
    by_sha = {r.sha256: r for r in rows}
    keys_by_precision = store.db.execute(
        "SELECT w.precision, list(DISTINCT w.key) FROM grid_cells g JOIN work w ON w.key = g.key "
        "WHERE g.run = ? GROUP BY w.precision ORDER BY w.precision", [run]).fetchall()
    parts = [(precision, keys, {sha: cells for sha, cells in _pending(store.db, keys).items() if sha in by_sha})
             for precision, keys in keys_by_precision]
    _started(config, [pending for _, _, pending in parts])
    report = SampleReport()
    for precision, keys, pending in parts:
        part = execute_on_bases(pending, {**by_sha, **stack_rows(store.db, pending)}, bases,
                                GridOptions(precision=precision), config, ResultSink(store))
        report.cells_total += len(keys)
        report.add(part)
    return report
