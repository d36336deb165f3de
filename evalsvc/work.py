"""The store work behind `evalsvc sample`, `score` and `add`, shared by the command line and the app's job workers.

Each work function takes an open store (or a thread view of it), the command's arguments (an argparse
namespace) and optionally an observer (`evalsvc.progress`: a job's, told of each sampled batch and able to
stop the work between batches) and returns an `Outcome`: the lines to show and the exit code. Jobs carry the same arguments as
JSON (`job_args` / `namespace`), with defaults taken from the command line's own parser.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

PATH_FIELDS = ("base", "config", "reference", "aesthetic_weights", "pickscore_weights", "clip_weights")
TUPLE_FIELDS = ("seeds", "cfg", "steps", "sampler", "size", "lora_scale", "clip_skip")
NOT_JOB_FIELDS = ("func", "command", "store", "no_progress", "folder", "interval", "stable_seconds", "max_idle")


@dataclass
class Outcome:
    exit_code: int = 0
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines + self.errors)


def grid_options(args):
    from .sampling.grid import GridOptions
    from .sampling.models import default_device, default_dtype

    precision = args.precision or str(default_dtype(getattr(args, "device", None) or default_device())).split(".")[-1]
    extra = {"max_cells": args.max_cells} if getattr(args, "max_cells", None) is not None else {}
    return GridOptions(seeds=args.seeds, cfgs=args.cfg, steps=_tuple(args.steps), samplers=_tuple(args.sampler),
                       sizes=None if args.size is None else tuple(tuple(s) for s in _tuple(args.size)),
                       lora_scales=_tuple(args.lora_scale), clip_skips=_tuple(args.clip_skip), precision=precision,
                       **extra)


def stacked(store, args, options):
    """`options` with the companion LoRAs of `--with-lora` registered and stacked."""
    from dataclasses import replace

    from .catalog import register_stack

    files = getattr(args, "with_lora", None)
    if not files:
        return options
    return replace(options, stack=register_stack(store, [(Path(p), float(s)) for p, s in files],
                                                 getattr(args, "allow_pickle", False)))


def _tuple(value):
    """A list argument as a tuple; a single value (a job queued by an older evalsvc) as a one-element tuple."""
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    return (value,)


def score_config(args, device: str | None, batch_size: int = 64):
    from .scoring.backbone import BackboneSpec
    from .scoring.registry import PreferenceWeights, ScoreConfig

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None
    preference = PreferenceWeights(args.aesthetic_weights, args.pickscore_weights, args.allow_pickle)
    return ScoreConfig(metrics=metrics, backbone=BackboneSpec.parse(args.backbone, args.clip_weights),
                       reference=args.reference, trigger=args.trigger, preference=preference, device=device or "cpu",
                       batch_size=batch_size, progress=not args.no_progress)


def score_lines(store, run: str, config) -> list[str]:
    from .scoring.runner import score_run

    report = score_run(store, run, config)
    done = ", ".join(f"{name} {count}" for name, count in report.computed.items())
    return [*([report.settings] if report.settings else []), *report.skipped, f"run {run!r}: values computed now: {done or 'none'} ({report.seconds:.1f} s)"]


def check_sample_args(args) -> None:
    """What `sample` can refuse before it touches the store: bad grid, suite or scoring options."""
    from .suites import load_suite

    if args.suite is None:
        if any(getattr(args, k, None) is not None for k in ("seeds", "cfg", "steps", "sampler", "size", "max_cells",
                                                             "with_lora")):
            raise InputError("grid options (--seeds, --cfg, ...) need --suite; without it the queued cells are sampled")
    else:
        load_suite(args.suite)
        grid_options(args)
    if getattr(args, "score", False):
        score_config(args, args.device)


def _runner_config(args, observer=None):
    from .sampling.runner import RunnerConfig

    return RunnerConfig(device=args.device, batch_size=args.batch_size, progress=not args.no_progress,
                        observer=observer)


def _sample_suite(store, args, out: Outcome, observer=None):
    from .sampling.runner import sample_run
    from .suites import load_suite

    suite = load_suite(args.suite)
    options, config = stacked(store, args, grid_options(args)), _runner_config(args, observer)
    if config.progress:
        for note in options.notes:
            print(note)
    else:
        out.lines.extend(options.notes)
    report = sample_run(store, args.run, suite, options, config)
    rate = report.sampled / report.seconds if report.seconds else 0.0
    if not config.progress:  # else printed before sampling
        out.lines.append(report.preview)
    out.lines.extend(f"suite {suite.name!r}: {note}" for note in suite.notes)
    out.lines.append(f"run {args.run!r}, suite {suite.name!r}: {report.cells_total} cells; sampled {report.sampled} "
                     f"now ({rate:.2f} img/s), {report.failed} failed; images in {store.layout.images}")
    out.errors.extend(f"failed {path}: {reason}" for path, reason in report.failures)
    return report


def sample_work(store, args, observer=None) -> Outcome:
    """`evalsvc sample`: the suite's grid (or the run's queued cells), then scoring when `--score`."""
    from .sampling.runner import sample_queued

    check_sample_args(args)
    out = Outcome()
    if args.suite is None:
        report = sample_queued(store, args.run, _runner_config(args, observer))
        out.lines.append(f"run {args.run!r}, queued grid: {report.cells_total} cells; sampled {report.sampled} now, "
                         f"{report.failed} failed; images in {store.layout.images}")
    else:
        report = _sample_suite(store, args, out, observer)
    if args.score:
        if observer is not None:
            observer.check()  # cancelled during the last batch: no scoring either
        out.lines.extend(score_lines(store, args.run, score_config(args, args.device)))
    out.exit_code = 1 if report.failed else 0
    return out


def score_work(store, args, observer=None) -> Outcome:
    """`evalsvc score` (a job's observer is not told of scoring, nor can it stop it)."""
    return Outcome(0, score_lines(store, args.run, score_config(args, args.device, args.batch_size)))


def add_work(store, args, observer=None) -> Outcome:
    """`evalsvc add`; for jobs from `watch` and the trainer also their loss rows and the suite's grid afterwards."""
    from .catalog import add_checkpoints
    from .checkpoints.folders import skipped_line
    from .store.bulk import insert_rows

    report = add_checkpoints(store, args.paths, args.run, base=args.base, ema=args.ema,
                             allow_pickle=args.allow_pickle, config=args.config)
    out = Outcome(1 if report.refused else 0)
    for info in report.added:
        progress = f" epoch {info.epoch}" if info.epoch is not None else (
            f" step {info.step}" if info.step is not None else "")
        out.lines.append(f"added  {_shown(info)}: {info.kind} {info.arch}{progress}{' EMA' if info.ema else ''} "
                         f"[{info.sha256[:12]}]")
    for info in report.known:
        if info.sha256 in report.ema_changed:
            was = "EMA" if report.ema_changed[info.sha256] else "raw"
            out.lines.append(f"known  {_shown(info)}: now marked {'EMA' if info.ema else 'raw'} (was {was}) "
                             f"[{info.sha256[:12]}]")
        else:
            out.lines.append(f"known  {_shown(info)}: same content as a registered checkpoint [{info.sha256[:12]}]")
    if skipped := skipped_line(report.state_files, report.state_folders):
        out.lines.append(skipped)
    out.errors.extend(f"refused {path}: {reason}" for path, reason in report.refused)
    out.lines.append(f"{len(report.added)} added, {len(report.known)} already known, {len(report.refused)} refused "
                     f"(run {args.run!r})")
    if getattr(args, "losses", None):
        with store.transaction() as db:
            insert_rows(db, "losses", ["run", "step", "epoch", "loss", "lr"], args.losses)
    if getattr(args, "suite", None) and (report.added or report.known):
        sampled = _sample_suite(store, args, out, observer)
        if getattr(args, "score", False):
            if observer is not None:
                observer.check()
            out.lines.extend(score_lines(store, args.run, score_config(args, args.device)))
        out.exit_code = max(out.exit_code, 1 if sampled.failed else 0)
    return out


def _shown(info) -> str:
    """A checkpoint's name, and its path when that is not its file's name (`checkpoint-500.safetensors
    (out/checkpoint-500/pytorch_lora_weights.safetensors)`)."""
    return info.file_name if info.file_name == Path(info.path).name else f"{info.file_name} ({info.path})"


WORK = {"sample": sample_work, "score": score_work, "add": add_work}


def job_args(args) -> dict:
    """A command's namespace as a job's JSON arguments: absolute paths (the app may run elsewhere), lists."""
    def plain(name, value):
        if isinstance(value, Path):
            return str(value.resolve())
        if isinstance(value, (tuple, list)):
            return [plain(name, v) for v in value]
        if name == "suite" and value is not None and Path(value).exists():
            return str(Path(value).resolve())
        return value

    return {name: plain(name, value) for name, value in vars(args).items() if name not in NOT_JOB_FIELDS}


def namespace(command: str, args: dict) -> argparse.Namespace:
    """A job's JSON arguments over the command line's defaults for `command` (and `sample`'s, for `add` jobs)."""
    from .cli import build_parser

    if command not in WORK:
        raise InputError(f"unknown job command {command!r} (commands: {', '.join(WORK)})")
    parser = build_parser()
    values = vars(parser.parse_args(["sample", "--run", "x"])) if command == "add" else {}
    values.update(vars(parser.parse_args([command, "--run", "x"])))
    unknown = sorted(set(args) - set(values) - {"losses"})
    if unknown:
        raise InputError(f"{command} job: unknown arguments {', '.join(unknown)}")
    values.update(args)
    for name in PATH_FIELDS:
        value = values.get(name)
        if value is not None:
            values[name] = [Path(v) for v in value] if isinstance(value, list) else Path(value)
    for name in TUPLE_FIELDS:
        value = values.get(name)
        if value is None:
            continue
        if name == "size" and value and not isinstance(value[0], (list, tuple)):
            value = [value]  # one WIDTHxHEIGHT, as jobs queued before sizes were lists carry it
        values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value) \
            if isinstance(value, (list, tuple)) else (value,)
    values["paths"] = [Path(p) for p in values.get("paths") or []]
    values["no_progress"] = True
    return argparse.Namespace(**values)


def run_job(store, command: str, args: dict, observer=None) -> Outcome:
    """Run one queued job on `store` (a worker's thread view), telling `observer` of its sampling."""
    return WORK[command](store, namespace(command, args), observer)
