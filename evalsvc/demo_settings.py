"""The demo's settings and portability steps: a checkpoint is only ever judged at a stated setting.

- **Settings** (run `purple-settings`): raw epochs of the purple LoRA and the base on the suite's purple
  prompts at 2 CFG x 2 step counts x 2 LoRA strengths. Each checkpoint's best setting and runner-up are
  printed, and the recommendation under the default policy (each checkpoint at its own best setting).
  Cells it shares with the main run (CFG 5, 20 steps, strength 1) are the same images, sampled once.
- **Portability** (run `purple-portability`): every raw epoch on the toy base it was trained on (the main run's
  images, sampled once) and on a second base, a full finetune of the toy base by our trainer that draws every background darker. Our
  portability matrix (clip_t, and its paired difference to each base itself) is printed beside the oracle's
  share of purple shapes on each base, and the recommendation on each base beside the oracle's best.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SETTINGS_RUN = "purple-settings"
PORTABILITY_RUN = "purple-portability"
DARK_BASE = "toy-sd15-dark"
DARK_BACKGROUNDS = {"white": (150, 150, 150), "black": (10, 10, 10), "gray": (75, 75, 75)}


@dataclass(frozen=True)
class SettingsDemo:
    epochs: tuple[int, ...] = (2, 4, 6, 8)  # raw epochs of the purple LoRA swept over settings (all on both bases)
    cfgs: tuple[float, ...] = (3.0, 5.0)
    steps: tuple[int, ...] = (10, 20)
    lora_scales: tuple[float, ...] = (0.6, 1.0)
    dark_images: int = 90  # the dark finetune's training set (known colours only, like the toy base's)
    dark_epochs: int = 3
    dark_learning_rate: float = 2e-4
    suite: str = "toyworld"
    prompts: tuple[str, ...] = field(default=())  # prompt ids on which settings are swept (default: the targets)


def _target_suite(settings: SettingsDemo):
    """The suite's purple prompts only: the settings sweep runs on part of the suite."""
    from dataclasses import replace

    from .suites import load_suite

    suite = load_suite(settings.suite)
    wanted = set(settings.prompts) or {p.id for p in suite.prompts if p.role == "target"}
    return replace(suite, name=f"{suite.name}-targets", prompts=tuple(p for p in suite.prompts if p.id in wanted))


def _epoch_rows(ctx, epochs: tuple[int, ...] | None) -> list[str]:
    """The shas of the main run's raw purple epochs named (None: every one)."""
    from .scoring.results import run_checkpoints

    from .demo import DEMO_RUN

    infos = run_checkpoints(ctx.store, DEMO_RUN).values()
    return [i.sha256 for i in sorted(infos, key=lambda i: i.epoch or 0)
            if i.role == "candidate" and i.series == DEMO_RUN and not i.ema and (epochs is None or i.epoch in epochs)]


def _score(ctx, run: str) -> None:
    from .scoring.backbone import BackboneSpec
    from .scoring.registry import ScoreConfig
    from .scoring.runner import score_run

    score_run(ctx.store, run, ScoreConfig(backbone=BackboneSpec.toy(), reference=ctx.models / "purple-data",
                                          progress=ctx.progress))


def sweep_settings(ctx, settings: SettingsDemo) -> None:
    """Sample and score the settings run, then print each checkpoint's best setting and the recommendation."""
    from .catalog import compose_run, run_base
    from .demo import DEMO_RUN
    from .sampling.grid import GridOptions
    from .sampling.runner import RunnerConfig, sample_run

    compose_run(ctx.store, SETTINGS_RUN, run_base(ctx.store.db, DEMO_RUN).sha256, _epoch_rows(ctx, settings.epochs))
    options = GridOptions(seeds=ctx.settings.seeds, cfgs=settings.cfgs, steps=settings.steps,
                          samplers=(ctx.settings.sampler,), lora_scales=settings.lora_scales)
    report = sample_run(ctx.store, SETTINGS_RUN, _target_suite(settings), options, RunnerConfig(progress=False))
    print(f"\nsettings: run {SETTINGS_RUN!r}, {report.preview.splitlines()[-1].removeprefix('grid: ')}; sampled "
          f"{report.sampled} now in {report.seconds:.0f} s")
    _score(ctx, SETTINGS_RUN)
    print_best_settings(ctx.store, SETTINGS_RUN)


def print_best_settings(store, run: str) -> None:
    from .report import ReportConfig, gather_report

    report = gather_report(store, run, ReportConfig(primary="clip_t", strip_images=0))
    print(f"each checkpoint's best setting by clip_t on purple prompts (of {len(report.settings)} settings), "
          "with the runner-up:")
    for row in report.rows:
        e = row.metrics["clip_t"]
        runner = "" if row.runner_up is None else (f"; runner-up {report.where(row.runner_up, row.info)} "
                                                   f"{row.by_setting[row.runner_up].mean:.4f}")
        print(f"  {row.info.file_name:<28} {report.where(row.setting, row.info):<34} {e.mean:.4f} "
              f"[{e.ci_low:.4f}, {e.ci_high:.4f}]{runner}")
    rec = report.recommendations["overall"]
    print(f"recommended ({report.config.judge.describe()}): {rec.checkpoint} at {rec.where}")


def train_dark_base(ctx, settings: SettingsDemo) -> Path:
    """A full finetune of the toy base on toy-world images with darker backgrounds (an LDM single file)."""
    from trainer.config import TrainConfig
    from trainer.toyworld.world import write_dataset
    from trainer.train import checkpoint_path, train

    from .toy.toy_base import materialize_toy_base

    base = materialize_toy_base(ctx.models / "toy-sd15")
    data = ctx.models / "dark-data"
    if not data.exists():
        write_dataset(data, settings.dark_images, seed=3, backgrounds=DARK_BACKGROUNDS)
    config = TrainConfig.from_dict({
        "model": {"base": str(base), "arch": "sd15"},
        "network": {"kind": "full"},
        "train": {"output_dir": str(ctx.models / DARK_BASE), "output_name": DARK_BASE, "seed": 0,
                  "epochs": settings.dark_epochs, "batch_size": 16, "learning_rate": settings.dark_learning_rate,
                  "scheduler": "constant", "warmup_steps": 5},
        "dataset": {"folder": str(data), "resolution": 64, "cache_latents": True},
    }, source="demo dark base")
    final = ctx.models / DARK_BASE / f"{DARK_BASE}.safetensors"
    if not final.exists():
        print(f"\ntraining a second base {DARK_BASE!r}: a full finetune of the toy base on {settings.dark_images} "
              f"images with darker backgrounds, {settings.dark_epochs} epochs", flush=True)
        for _ in train(config, None):
            pass
        checkpoint_path(config, settings.dark_epochs, ema=False).rename(final)  # the finetune's last epoch
    return final


def portability(ctx, settings: SettingsDemo) -> None:
    """Sample the purple epochs on both bases, score them and print the matrix beside the oracle."""
    from .catalog import add_checkpoints, compose_run, run_base
    from .demo import DEMO_RUN
    from .sampling.grid import GridOptions
    from .sampling.runner import RunnerConfig, sample_run
    from .suites import load_suite

    dark = train_dark_base(ctx, settings)
    first = run_base(ctx.store.db, DEMO_RUN)
    compose_run(ctx.store, PORTABILITY_RUN, first.sha256, _epoch_rows(ctx, None))
    add_checkpoints(ctx.store, [], PORTABILITY_RUN, base=[Path(first.path), dark], config=Path(first.path))
    options = GridOptions(seeds=ctx.settings.seeds, cfgs=(ctx.settings.cfg,), steps=(ctx.settings.steps,),
                          samplers=(ctx.settings.sampler,))
    report = sample_run(ctx.store, PORTABILITY_RUN, load_suite(settings.suite), options, RunnerConfig(progress=False))
    print(f"portability: run {PORTABILITY_RUN!r}, {report.preview.splitlines()[-1].removeprefix('grid: ')}; sampled "
          f"{report.sampled} now in {report.seconds:.0f} s")
    _score(ctx, PORTABILITY_RUN)
    print_portability(ctx.store, PORTABILITY_RUN)


def oracle_purple_share(store, run: str) -> dict[tuple[str, str], float]:
    """{(checkpoint file name, base file name): share of purple prompts drawn purple}, by the oracle."""
    from PIL import Image

    from trainer.toyworld.oracle import judge

    from .scoring.cells import run_cells
    from .scoring.results import checkpoint_names

    names = checkpoint_names(store.db)
    hits = defaultdict(list)
    for cell in run_cells(store, run):
        if cell.prompt_role != "target":
            continue
        with Image.open(cell.image_path) as image:
            hits[(cell.file_name, names.get(cell.setting.base, ""))].append(judge(image, cell.prompt).matches
                                                                            .get("colour", False))
    return {key: sum(v) / len(v) for key, v in hits.items()}


def print_portability(store, run: str) -> None:
    from .demo_truth import best_set_check
    from .report import ReportConfig, gather_report
    from .scoring.results import AnalysisConfig
    from .stats.judge import Judge

    report = gather_report(store, run, ReportConfig(primary="clip_t", strip_images=0))
    [matrix] = [m for m in report.portability if m.axis == "base"]
    oracle = oracle_purple_share(store, run)
    print("checkpoint x base: clip_t on purple prompts [95% CI], Δ = paired difference to that base itself; "
          "oracle = share drawn purple")
    print(f"  {'checkpoint':<28}" + "".join(f" {c:<44}" for c in matrix.columns))
    for name, cells in matrix.rows:
        parts = []
        for column in matrix.columns:
            cell = cells.get(column)
            if cell is None:
                parts.append(f" {'–':<44}")
                continue
            e, d = cell.estimate, cell.vs_reference
            delta = "" if d is None else f" Δ {d.mean:+.3f}"
            parts.append(f" {e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]{delta} oracle "
                         f"{oracle.get((name, column), float('nan')):.2f}".ljust(45))
        print(f"  {name:<28}" + "".join(parts))
    for column in matrix.columns:
        check = best_set_check(store, run, AnalysisConfig(primary="clip_t", judge=Judge("at", (("base", column),))))
        b = check.oracle_best_estimate
        print(f"on {column}: recommended {check.recommended.file_name} (oracle {check.recommended_oracle.mean:.2f}); "
              f"the oracle's best is epoch {check.oracle_best.epoch} ({b.mean:.2f}, 95% CI {b.ci_low:.2f} to "
              f"{b.ci_high:.2f}) -> {'inside' if check.inside else 'OUTSIDE'} the oracle's best set")
