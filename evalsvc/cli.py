"""The `evalsvc` command line. Every command is a function the tests call with an argv list."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EvalsvcError, InputError


def _list(kind: str, convert):
    """An argparse type for comma lists that names the element it cannot read (`--steps 20,x`)."""
    def parse(text: str) -> tuple:
        values = []
        for item in (v.strip() for v in text.split(",")):
            if not item:
                continue
            try:
                values.append(convert(item))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r} in {text!r} is not {kind}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind} values, got {text!r}")
        return tuple(values)
    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _size_value(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _stacked(text: str) -> tuple[Path, float]:
    """FILE[:SCALE] for --with-lora."""
    path, sep, scale = text.rpartition(":")
    if sep and path and not scale.startswith(("/", "\\")):
        try:
            value = float(scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: the strength after ':' must be a number, got {scale!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r}: the strength must be finite")
        return Path(path), value
    return Path(text), 1.0


_floats = _list("a number", float)
_ints = _list("an integer", int)
_sizes = _list("a size WIDTHxHEIGHT such as 512x768", _size_value)
_names = _list("a name", str)


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=None,
                        help="store folder (default: $EVALSVC_STORE or ./evalsvc-store)")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """Grid axes shared by `sample` (and later `watch`/`regress`)."""
    parser.add_argument("--seeds", type=_ints, help="comma-separated seeds (default: the suite's, else 1,2)")
    parser.add_argument("--cfg", type=_floats, help="comma-separated CFG scales (default: the suite's, else 7)")
    parser.add_argument("--steps", type=_ints, help="comma-separated step counts (default: the suite's, else 20)")
    parser.add_argument("--sampler", type=_names, help="comma-separated sampler names: A1111, kohya or OneTrainer "
                                                       "spelling (default: the suite's, else dpmpp_2m_karras)")
    parser.add_argument("--size", type=_sizes, help="comma-separated WIDTHxHEIGHT (default: the suite's, else the base "
                                                    "model's native size)")
    parser.add_argument("--lora-scale", type=_floats, default=(1.0,), help="comma-separated LoRA strengths (default 1)")
    parser.add_argument("--clip-skip", type=_ints, default=(1,),
                        help="comma-separated A1111 clip skips: 1 = last layer (default), 2 = penultimate")
    parser.add_argument("--with-lora", type=_stacked, action="append", metavar="FILE[:SCALE]",
                        help="a companion LoRA (speed, style) applied to every cell at SCALE (default 1), the base "
                             "model's cells included; repeat it to stack several. The stack is part of the setting")
    parser.add_argument("--max-cells", type=int, default=None,
                        help="refuse a grid with more cells than this still to sample (default 4096)")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default=None,
                        help="weights and activations dtype (default: bfloat16 on a GPU, float32 on a CPU)")


def add_score_arguments(parser: argparse.ArgumentParser, after_sampling: bool = False) -> None:
    """The scoring options of `score`; with `after_sampling`, a `--score` switch that turns them on."""
    if after_sampling:
        parser.add_argument("--score", action="store_true",
                            help="score the run (as `evalsvc score` with the options below) after each sampling pass")
    parser.add_argument("--metrics", help="comma-separated metric names (default: every registered scorer)")
    parser.add_argument("--backbone", help="open_clip MODEL or MODEL:TAG, or 'toy' for the toy CLIP (default: the "
                                           "run's last one, else ViT-L-14-quickgelu:openai from the model cache)")
    parser.add_argument("--clip-weights", help="a local weights file for --backbone")
    parser.add_argument("--reference", type=Path,
                        help="folder of the training images (clip_i, nearest_train, kid, fid; default: the run's last)")
    parser.add_argument("--trigger", help="trigger word, removed from prompts for clip_t_untriggered (default: the "
                                          "run's last)")
    parser.add_argument("--aesthetic-weights", type=Path,
                        help="LAION aesthetic v2 head (.safetensors; .pth needs --allow-pickle) for `aesthetic`")
    parser.add_argument("--pickscore-weights", type=Path,
                        help="folder with PickScore v1 (default: yuvalkirstain/PickScore_v1 in the model cache)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read a .pth aesthetic head (with torch.load(weights_only=True))")


def _queue_in_app(command: str, args) -> int | None:
    """When the store's owner is the app, queue `command` there and say so; None when it is not."""
    import getpass

    from .owner import find_link, submit_job
    from .store import default_store_path
    from .work import job_args

    root = args.store or default_store_path()
    link = find_link(root)
    if link is None:
        return None
    job = submit_job(link, command, job_args(args), f"{getpass.getuser()} (evalsvc {command})")
    print(f"store {root} is in use by the evalsvc app (PID {link.pid}): queued as job {job} there; "
          f"follow it in the Jobs tab of {link.url}")
    return job


def _run_here_or_in_app(command: str, args) -> int:
    """Run `command`'s work on the store, or queue it in the app that holds the store."""
    from .errors import StoreInUseError
    from .store import open_store
    from .work import WORK

    try:
        with open_store(args.store) as store:
            outcome = WORK[command](store, args)
    except StoreInUseError:
        if _queue_in_app(command, args) is None:
            raise
        return 0
    for line in outcome.lines:
        print(line)
    for line in outcome.errors:
        print(line, file=sys.stderr)
    return outcome.exit_code


def cmd_init(args) -> int:
    from .store import open_store

    with open_store(args.store) as store:
        print(f"store ready at {store.layout.root} (migrations: {', '.join(store.applied_migrations())})")
    return 0


def cmd_add(args) -> int:
    return _run_here_or_in_app("add", args)


def cmd_suites(args) -> int:
    from .suites import list_suites

    suites = list_suites()
    if args.json:
        print(json.dumps([{"name": s.name, "prompts": len(s.prompts), "hash": s.content_hash, "source": s.source,
                           "description": s.description} for s in suites], indent=2))
        return 0
    for suite in suites:
        roles = sorted({p.role for p in suite.prompts})
        print(f"{suite.name:<16} {len(suite.prompts):>3} prompts  {'/'.join(roles):<16} {suite.content_hash[:12]}  "
              f"{suite.description}")
    return 0


def cmd_sample(args) -> int:
    from .sampling.shards import distributed_world

    if distributed_world() > 1:
        return _sample_distributed(args)
    from .work import check_sample_args

    check_sample_args(args)  # bad options fail before the store is opened or anything is queued
    return _run_here_or_in_app("sample", args)


def _sample_distributed(args) -> int:
    from .sampling.runner import RunnerConfig
    from .sampling.shards import sample_distributed
    from .store import default_store_path, open_store
    from .suites import load_suite
    from .work import check_sample_args, grid_options, score_config, score_lines

    if args.suite is None:
        raise InputError("distributed sampling needs --suite")
    check_sample_args(args)
    root = args.store or default_store_path()
    config = RunnerConfig(device=args.device, batch_size=args.batch_size, progress=not args.no_progress)
    suite = load_suite(args.suite)
    report = sample_distributed(root, args.run, suite, grid_options(args), config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 1 if report.failed else 0
    if args.score:
        with open_store(root) as store:
            for line in score_lines(store, args.run, score_config(args, args.device)):
                print(line)
    rate = report.sampled / report.seconds if report.seconds else 0.0
    print(f"run {args.run!r}, suite {suite.name!r}: {report.cells_total} cells; sampled {report.sampled} now "
          f"({rate:.2f} img/s), {report.failed} failed; images in {root / 'images'}")
    for path, reason in report.failures:
        print(f"failed {path}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_status(args) -> int:
    from .status import render_status, store_status
    from .store import open_store

    with open_store(args.store, create=False, read_only=True) as store:
        status = store_status(store.db)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return 0


def cmd_watch(args) -> int:
    from .errors import StoreInUseError
    from .owner import find_link
    from .sampling.runner import RunnerConfig
    from .store import default_store_path, open_store
    from .suites import load_suite
    from .watch import WatchConfig, watch
    from .work import grid_options, score_config, score_lines, stacked

    suite = load_suite(args.suite)
    options = grid_options(args)
    config = WatchConfig(interval=args.interval, stable_seconds=args.stable_seconds, max_idle=args.max_idle)
    runner = RunnerConfig(device=args.device, batch_size=args.batch_size, progress=not args.no_progress)
    scoring = score_config(args, args.device) if args.score else None
    failed = 0
    try:
        store = open_store(args.store)
    except StoreInUseError:
        link = find_link(args.store or default_store_path())
        if link is None:
            raise
        return _watch_through_app(args, config, link)
    with store:
        options = stacked(store, args, options)
        print(f"watching {args.folder} for run {args.run!r} (suite {suite.name!r}); Ctrl-C stops", flush=True)
        for event in watch(store, args.folder, args.run, suite, options, runner, config, base=args.base):
            if event.kind == "new":
                print(f"new checkpoint {event.path}", flush=True)
            elif event.kind == "known":
                print(f"known checkpoint {event.path}: {event.detail}", flush=True)
            elif event.kind == "refused":
                print(f"skipped {event.path}: {event.detail}", file=sys.stderr, flush=True)
            elif event.kind == "sampled":
                failed += event.report.failed
                print(f"sampled {event.report.sampled} cells ({event.report.failed} failed); "
                      f"grid has {event.report.cells_total}", flush=True)
                if scoring is not None and event.report.sampled:
                    print("\n".join(score_lines(store, args.run, scoring)), flush=True)
            else:
                print(f"stopping: {event.detail}", flush=True)
    return 1 if failed else 0


def _watch_through_app(args, config, link) -> int:
    """`watch` while the app owns the store: each complete checkpoint becomes an `add` job sampled there."""
    import getpass

    from .owner import submit_job
    from .watch import ready_batches
    from .work import job_args

    batches = ready_batches(args.folder, config)
    by = f"{getpass.getuser()} (evalsvc watch)"
    common = job_args(args)
    print(f"the store is in use by the evalsvc app (PID {link.pid}): watching {args.folder} for run {args.run!r} "
          f"and queueing each new checkpoint there ({link.url}, Jobs tab); Ctrl-C stops", flush=True)
    if args.base is not None:
        print(f"queued job {submit_job(link, 'add', {**common, 'suite': None}, by)}: the base model", flush=True)
    for ready in batches:
        job = submit_job(link, "add", {**common, "base": None, "paths": [str(p.resolve()) for p in ready]}, by)
        print(f"queued job {job}: {', '.join(p.name for p in ready)}", flush=True)
    print(f"stopping: idle for {config.max_idle:g} s", flush=True)
    return 0


def cmd_train(args) -> int:
    from trainer.config import load_config
    from trainer.sinks import AppSink, open_sink
    from trainer.train import train

    config = load_config(args.config)
    sink, store = open_sink(args.store, config)
    if isinstance(sink, AppSink):
        print(f"the store is in use by the evalsvc app (PID {sink.link.pid}): each saved epoch is queued there "
              f"({sink.link.url}, Jobs tab)", flush=True)
    try:
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(unit="step", desc="training", dynamic_ncols=True)
        for event in train(config, sink):
            if event.kind == "step" and bar is not None:
                bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}", refresh=False)
                bar.update(1)
            elif event.kind == "epoch":
                names = ", ".join(p.name for p in event.paths)
                (bar.write if bar is not None else print)(f"epoch {event.epoch} (step {event.step}): saved {names}")
        if bar is not None:
            bar.close()
    finally:
        if store is not None:
            store.close()
    print(f"checkpoints in {config.train.output_dir}" + (f"; registered in run {config.train.output_name!r}"
                                                         if args.store is not None else ""))
    return 0


def cmd_score(args) -> int:
    from .work import score_config

    score_config(args, args.device, args.batch_size)  # bad options fail before anything is queued
    return _run_here_or_in_app("score", args)


def cmd_report(args) -> int:
    from .report import ReportConfig, default_report_path, gather_report, write_report
    from .store import open_store

    from .stats.judge import Judge

    from .goals import goal_named, run_goal

    goal = goal_named(args.goal) if args.goal else None
    if goal is not None and args.primary is not None and args.primary != goal.fidelity:
        raise InputError(f"--primary {args.primary} contradicts --goal {args.goal}, whose fidelity metric is "
                         f"{goal.fidelity}; give one of them")
    with open_store(args.store, create=False, read_only=True) as store:
        if goal is None and args.primary is None:
            goal = run_goal(store.db, args.run)  # the suite's, if it declares one
        config = ReportConfig(primary=args.primary or "clip_t", judge=Judge.parse(args.judge), goal=goal)
        report = gather_report(store, args.run, config)
        root = store.layout.root
    print(write_report(report, args.format, args.out or default_report_path(root, args.run, args.format)))
    return 0


def cmd_audit(args) -> int:
    from .scoring.audit import AuditConfig, audit_json, audit_lines, audit_run
    from .scoring.backbone import BackboneSpec
    from .scoring.registry import ScoreConfig
    from .store import open_store

    scoring = ScoreConfig(backbone=BackboneSpec.parse(args.backbone, args.clip_weights), reference=args.reference,
                          device=args.device or "cpu", progress=not args.no_progress)
    config = AuditConfig(args.checkpoint, args.image, args.top, scoring)
    with open_store(args.store, create=False) as store:  # writes the embeddings it computes to the cache
        audit = audit_run(store, args.run, config)
        root = store.layout.root
    if args.json:
        print(json.dumps(audit_json(audit), indent=2))
    else:
        print("\n".join(audit_lines(audit, config.scoring.reference or root)))
    return 0


def cmd_regress(args) -> int:
    from .regress.report import render_all
    from .regress.run import RegressRequest, regress
    from .regress.verdicts import record_verdict
    from .sampling.runner import RunnerConfig
    from .store import open_store
    from .work import grid_options, score_config, stacked

    request = RegressRequest(args.baseline, args.candidate, args.suite, gates=args.gates, base=args.base,
                             allow_suite_change=args.allow_suite_change, allow_pickle=args.allow_pickle)
    runner = RunnerConfig(device=args.device, batch_size=args.batch_size, progress=not args.no_progress)
    scoring = score_config(args, args.device)
    options = grid_options(args)
    with open_store(args.store) as store:
        options = stacked(store, args, options)
        try:
            result = regress(store, request, options, runner, scoring)
        except ValueError as exc:  # a gates/bootstrap combination that could never pass
            raise InputError(str(exc)) from None
        reports = render_all(result, store.layout.images)
        with store.transaction() as db:
            verdict_id = record_verdict(db, result, reports)
    if result.scoring_note:
        print(result.scoring_note)
    for line in result.evaluation.lines():
        print(f"FAIL {line}")
    if args.report is not None:
        fmt = {".md": "md", ".html": "html", ".htm": "html", ".json": "json"}.get(args.report.suffix.lower(), "md")
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(reports[fmt])
    word = "pass" if result.exit_code == 0 else "REGRESSION"
    failed = len(result.evaluation.failures)
    print(f"{word}: candidate {result.candidate.file_name} vs baseline {result.baseline.file_name} on suite "
          f"{result.suite_name!r} ({result.cells} paired cells; {failed} of "
          f"{sum(not r.informational for r in result.evaluation.results)} gates failed); verdict {verdict_id} "
          f"stored" + (f", report in {args.report}" if args.report else ""))
    return result.exit_code


def cmd_verdicts(args) -> int:
    from .regress.verdicts import list_verdicts, stored_report
    from .store import open_store

    with open_store(args.store, create=False, read_only=True) as store:
        if args.id is None:
            for v in list_verdicts(store.db):
                print(f"{v.id:>4}  {v.created_at:%Y-%m-%d %H:%M}  {v.verdict:<10}  {v.candidate} vs {v.baseline}  "
                      f"suite {v.suite_name} [{v.suite_hash[:12]}]  gates [{v.gates_hash[:12]}]")
            return 0
        text = stored_report(store.db, args.id, args.format)
    if args.out is not None:
        args.out.write_text(text)
        print(args.out)
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_serve(args) -> int:
    from .app.server import AppConfig, serve
    from .app.sessions import SessionConfig
    from .votes import VoteConfig

    if not args.session_hours > 0:
        raise InputError(f"--session-hours must be positive, got {args.session_hours:g}")
    serve(args.store, AppConfig(host=args.host, port=args.port, auth_file=args.auth, run=args.run,
                                workers=args.workers, vote=VoteConfig(pairing=args.vote_pairs, flagged=args.vote_flagged),
                                allowed_hosts=tuple(args.allowed_host or ()), internal_runs=args.all_runs,
                                sessions=SessionConfig(hours=args.session_hours)))
    return 0


def cmd_demo(args) -> int:
    from .demo import DEMO_RUN, run_demo
    from .store import default_store_path

    code = run_demo(args.store, progress=not args.no_progress)
    root = args.store or default_store_path()
    if code != 0 or args.no_browser:
        print(f"look at the run in the app: evalsvc serve --store {root} --run {DEMO_RUN}")
        return code
    from .app.server import AppConfig, serve

    serve(args.store, AppConfig(port=args.port, run=DEMO_RUN), open_browser=True)
    return 0


def cmd_doctor(args) -> int:
    from .doctor import DoctorConfig, diagnose, render
    from .lockfile import source_lock
    from .scoring.backbone import BackboneSpec

    lock = args.lock if args.lock is not None else source_lock()
    report = diagnose(DoctorConfig(lock=lock, backbone=BackboneSpec.parse(args.backbone, args.clip_weights),
                                   aesthetic=args.aesthetic_weights, pickscore=args.pickscore_weights,
                                   allow_pickle=args.allow_pickle))
    print(render(report))
    return 1 if report.problems else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="evalsvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"evalsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create or upgrade a store")
    _store_arg(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("add", help="register checkpoint files or folders under a run")
    _store_arg(p)
    p.add_argument("paths", nargs="*", type=Path, help="checkpoint files, diffusers folders, or folders of checkpoints")
    p.add_argument("--run", required=True, help="run name that groups the checkpoints")
    p.add_argument("--base", type=Path, action="append",
                   help="base model (diffusers folder or single-file checkpoint); repeat it for portability: the first "
                        "is the base the LoRAs were trained on, every LoRA of the run is also sampled on the others")
    p.add_argument("--config", type=Path, help="diffusers folder with the configs for a single-file --base")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="ema", action="store_true", default=None, help="mark these checkpoints as EMA weights")
    ema.add_argument("--no-ema", dest="ema", action="store_false", help="mark them as raw weights")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load .ckpt/.pt pickles (only tensors, with torch.load(weights_only=True))")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("suites", help="list the prompt suites in prompts/")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("sample", help="sample a run's grid: checkpoints x prompts x seeds x CFG values")
    _store_arg(p)
    p.add_argument("--run", required=True)
    p.add_argument("--suite",
                   help="suite name from prompts/, or a suite .toml, kohya sample_prompts.txt/.toml/.json, OneTrainer "
                        "samples.json, or a training folder (its captions: the memorisation probe); without it, the cells "
                        "already queued for the run (e.g. by `evalsvc train`)")
    add_grid_arguments(p)
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, help="grid cells per UNet batch (default 32 on a GPU, 24 on a CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_score_arguments(p, after_sampling=True)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("watch", help="evaluate each checkpoint a trainer writes into a folder, once it is complete")
    _store_arg(p)
    p.add_argument("folder", type=Path, help="the trainer's output folder")
    p.add_argument("--run", required=True)
    p.add_argument("--suite", required=True, help="as for `sample`")
    p.add_argument("--base", type=Path, help="base model, when the run has none yet")
    add_grid_arguments(p)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between scans (default 5)")
    p.add_argument("--stable-seconds", type=float, default=2.0,
                   help="a file must be unchanged this long before it is read (default 2)")
    p.add_argument("--max-idle", type=float, help="stop after this many seconds without a new checkpoint")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-progress", action="store_true")
    add_score_arguments(p, after_sampling=True)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("status", help="runs, checkpoints and grid completion")
    _store_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("train", help="train a LoRA from a TOML config; saves raw and EMA weights every epoch")
    p.add_argument("config", type=Path, help="trainer TOML config")
    p.add_argument("--store", type=Path, default=None,
                   help="register every saved checkpoint and the loss log in this store")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score a run's sampled images (CLIP, distribution, drift, overcook, oracle)")
    _store_arg(p)
    p.add_argument("--run", required=True)
    add_score_arguments(p)
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="images per embedding batch (default 64)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="a run's leaderboard, recommendation, plots and images (Markdown, HTML, JSON)")
    _store_arg(p)
    p.add_argument("--run", required=True)
    p.add_argument("--format", choices=("md", "html", "json"), default="md",
                   help="md: for a pull-request comment (default); html: one offline file with plots and images; "
                        "json: the numbers")
    p.add_argument("--out", type=Path, help="output file (default: STORE/reports/RUN.EXT)")
    p.add_argument("--primary",
                   help="image-level metric that picks each checkpoint's setting and the recommendation (default clip_t)")
    p.add_argument("--goal", choices=("concept", "character", "style"),
                   help="what the LoRA is for: judge it on that goal's fidelity and prompt following together, with "
                        "its constraints as flags (undertrained, overcooked, memorised, overfit, polluting); "
                        "default: the goal the run's suite declares (`goal = ...`), if any")
    p.add_argument("--judge", default="best",
                   help="judging policy: best (each checkpoint at its own best setting; default), "
                        "at:AXIS=VALUE,... (every checkpoint at one setting, e.g. at:steps=20,cfg=5), or robust "
                        "(the mean over every setting all candidates were sampled at, with the worst named; "
                        "robust:AXIS=V1|V2,... over a declared range only, e.g. robust:steps=20|30)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("audit", help="the training images a checkpoint's outputs (or one image) come back to: "
                                     "nearest neighbours, and those over-represented against the base's outputs")
    _store_arg(p)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", help="a candidate's file name (default: every candidate of the run)")
    p.add_argument("--image", help="a cell key or image file of the run: its nearest training images")
    p.add_argument("--reference", type=Path, help="folder of the training images (default: the run's last scoring's)")
    p.add_argument("--backbone", help="open_clip MODEL[:TAG] or 'toy' (default: the run's last scoring's)")
    p.add_argument("--clip-weights", help="a local weights file for --backbone")
    p.add_argument("--top", type=int, default=3, help="training images listed per checkpoint or image (default 3)")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("regress", help="gate a candidate checkpoint against a baseline on a frozen suite (exit 0 pass, "
                                       "1 regression, 2 could not run)")
    _store_arg(p)
    p.add_argument("--baseline", required=True, help="checkpoint file, registered name, RUN:EPOCH[:ema] or hash prefix")
    p.add_argument("--candidate", required=True, help="as --baseline")
    p.add_argument("--suite", required=True, help="as for `sample`; frozen by its content hash")
    p.add_argument("--gates", type=Path, help="gates TOML (default: clip_t gated with margin 0.01, the rest reported)")
    p.add_argument("--report", type=Path, help="also write the report here (.md, .html or .json)")
    p.add_argument("--base", type=Path, help="base model for LoRA files not registered yet")
    p.add_argument("--allow-suite-change", action="store_true",
                   help="gate although the baseline was gated before with other contents under this suite name")
    add_grid_arguments(p)
    add_score_arguments(p)
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_regress)

    p = sub.add_parser("verdicts", help="list stored regression verdicts, or print one's report again")
    _store_arg(p)
    p.add_argument("id", type=int, nargs="?", help="a verdict id (default: list them)")
    p.add_argument("--format", choices=("md", "html", "json"), default="md")
    p.add_argument("--out", type=Path, help="write the report to this file")
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("serve", help="the app: grids, blind votes, the leaderboard and the release decision")
    _store_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need --auth)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", type=Path, help="file of name:password[:role] lines (mode 600; roles voter, reviewer, "
                                             "admin; no role: voter): the logins")
    p.add_argument("--session-hours", type=float, default=8.0,
                   help="a login lasts this long (default 8: a working day); logging out ends it sooner")
    p.add_argument("--run", help="the run shown first (default: the first)")
    p.add_argument("--workers", type=int, default=1, help="threads running queued sampling and scoring jobs (default 1)")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a host name the app answers besides 127.0.0.1, localhost and --host (repeatable), e.g. the "
                        "machine's name when it listens on 0.0.0.0; requests naming any other host get 400")
    p.add_argument("--all-runs", action="store_true",
                   help="also list the runs `evalsvc regress` makes for itself (regress-…) in the run chooser")
    p.add_argument("--vote-pairs", choices=("checkpoints", "settings"), default="checkpoints",
                   help="what a blind vote compares: two checkpoints at one setting (default), or one checkpoint at "
                        "two settings (\"is 30 steps better than 20?\")")
    p.add_argument("--vote-flagged", action="store_true",
                   help="also pair checkpoints flagged at a setting (overcooked, memorised); left out by default")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("doctor", help="versions of Python and the libraries against the lock, the GPU torch sees, and "
                                      "which scorer weights are here (exit 1 with one line per problem)")
    p.add_argument("--lock", type=Path, help="lock to compare with (default: requirements.lock of the source tree)")
    p.add_argument("--backbone", help="also check this open_clip MODEL or MODEL:TAG")
    p.add_argument("--clip-weights", help="a local weights file for --backbone")
    p.add_argument("--aesthetic-weights", type=Path, help="check this LAION aesthetic v2 head")
    p.add_argument("--pickscore-weights", type=Path, help="check this PickScore v1 folder")
    p.add_argument("--allow-pickle", action="store_true", help="read a .pth aesthetic head (weights_only=True)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("demo", help="on the toy world: train a LoRA teaching a held-out concept, sample and score "
                                    "every epoch, then open the app on the run")
    _store_arg(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-browser", action="store_true", help="end after the recommendation instead of opening the app")
    p.add_argument("--port", type=int, default=7860, help="the app's port (default 7860)")
    p.set_defaults(func=cmd_demo)
    return parser


def _quiet_libraries() -> None:
    """Our progress bar reports the work; the libraries' loading bars and notices would bury it."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .toy.cpu_kernels import pin_cpu_kernels

        pin_cpu_kernels()  # the demo's figures on any x86-64 CPU (torch reads this when first imported)
    if args.command in ("add", "sample", "watch", "train", "demo", "serve", "regress"):
        _quiet_libraries()
    try:
        return args.func(args)
    except EvalsvcError as exc:
        print(f"evalsvc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalsvc: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
