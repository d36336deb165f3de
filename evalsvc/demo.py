"""`evalsvc demo`: the whole loop on the toy world, offline, in about 9 minutes on 2 CPU cores.

1. writes the committed toy base (trained on the toy world without purple) as a diffusers folder;
2. draws a small purple dataset and trains a LoRA that teaches purple, saving raw and EMA weights
   at every epoch (the raw series is exactly a run without EMA: the EMA never feeds back);
3. the trainer registers every epoch under the run `purple` and queues the `toyworld` grid;
4. the engine samples the queue (base included, for reference);
5. the toy world's oracle reads every image back and prints adherence per epoch, raw and EMA;
6. `evalsvc score` scores every image with the toy CLIP (clip_t, clip_i, nearest_train, oracle) and
   the recommendation (earliest epoch not significantly worse than the best on clip_t) is printed
   for the raw and the EMA series, beside the oracle's best;
7. settings and portability (`demo_settings`): a few epochs at 2 CFG x 2 step counts x 2 LoRA strengths
   on the purple prompts, each checkpoint's best setting; and the same epochs on a second base (a dark
   finetune of the toy base), the portability matrix beside the oracle on both bases.

Each step is a function of `DemoContext`, so later steps (scores, the app) slot in after these.
Everything is written under the store folder (`./evalsvc-store` or `$EVALSVC_STORE`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .demo_settings import SettingsDemo, portability, sweep_settings
from .demo_variants import MEMORISED, OVERCOOKED, BadVariants, train_bad_variants

DEMO_RUN = "purple"
DEMO_SUITE = "toyworld"


@dataclass(frozen=True)
class DemoSettings:
    epochs: int = 8
    images: int = 90
    rank: int = 8
    learning_rate: float = 2e-3
    ema_decay: float = 0.9
    seeds: tuple[int, ...] = (1, 2)
    cfg: float = 5.0
    steps: int = 20
    sampler: str = "euler"
    variants: BadVariants | None = field(default_factory=BadVariants)
    sweep: SettingsDemo | None = field(default_factory=SettingsDemo)  # settings and portability (demo_settings)


@dataclass
class DemoContext:
    store: object
    root: Path
    settings: DemoSettings
    progress: bool = True

    @property
    def models(self) -> Path:
        return self.root / "demo-models"


def lora_config(ctx: DemoContext, base: Path, data: Path):
    """The demo LoRA's trainer config: purple taught to the UNet and text encoder, EMA kept alongside."""
    from trainer.config import TrainConfig

    s = ctx.settings
    return TrainConfig.from_dict({
        "model": {"base": str(base), "arch": "sd15"},
        "network": {"kind": "lora", "rank": s.rank, "train_text_encoder": True},
        "train": {"output_dir": str(ctx.models / "purple-lora"), "output_name": DEMO_RUN, "seed": 0,
                  "epochs": s.epochs, "batch_size": 16, "learning_rate": s.learning_rate, "scheduler": "constant",
                  "warmup_steps": 5},
        "ema": {"enabled": True, "decay": s.ema_decay},
        "dataset": {"folder": str(data), "resolution": 64, "cache_latents": True},
        "eval": {"suite": DEMO_SUITE, "seeds": list(s.seeds), "cfgs": [s.cfg], "steps": s.steps,
                 "sampler": s.sampler},
    }, source="demo")


def train_lora(ctx: DemoContext) -> None:
    """Train the purple LoRA unless every epoch of it is already registered (a re-run samples what is missing),
    then the deliberately bad variants (see `demo_variants`)."""
    from evalsvc.toy.toy_base import materialize_toy_base
    from trainer.toyworld.world import write_dataset
    from trainer.train import checkpoint_path

    from .catalog import run_file_names

    base = materialize_toy_base(ctx.models / "toy-sd15")
    data = ctx.models / "purple-data"
    if not data.exists():
        write_dataset(data, ctx.settings.images, seed=1, colours=("purple",))
    config = lora_config(ctx, base, data)
    registered = run_file_names(ctx.store.db, DEMO_RUN)
    epochs = {checkpoint_path(config, e, ema).name for e in range(1, ctx.settings.epochs + 1) for ema in (False, True)}
    if epochs <= registered:
        print(f"LoRA {DEMO_RUN!r}: all {ctx.settings.epochs} epochs already trained and registered")
    else:
        _train_good(ctx, config)
    if ctx.settings.variants is not None:
        train_bad_variants(ctx, config, DEMO_RUN, ctx.settings.variants)


def _train_good(ctx: DemoContext, config) -> None:
    from trainer.sinks import StoreSink
    from trainer.train import train

    print(f"training LoRA {DEMO_RUN!r} on {ctx.settings.images} purple images for {ctx.settings.epochs} epochs "
          f"(raw and EMA weights saved every epoch)", flush=True)
    for event in train(config, StoreSink(ctx.store, config)):
        if event.kind == "epoch":
            print(f"  epoch {event.epoch} (step {event.step}): saved {', '.join(p.name for p in event.paths)}",
                  flush=True)


def sample(ctx: DemoContext) -> int:
    from evalsvc.sampling.runner import RunnerConfig, sample_queued

    report = sample_queued(ctx.store, DEMO_RUN, RunnerConfig(progress=ctx.progress))
    print(f"grid: {report.cells_total} cells, {report.sampled} sampled now, {report.failed} failed")
    return report.failed


def oracle_per_checkpoint(store, run: str) -> list[dict]:
    """Oracle adherence of each checkpoint of `run` on the suite's target and holdout prompts."""
    from PIL import Image

    from trainer.toyworld.oracle import judge

    from .scoring.cells import run_cells

    table: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for cell in run_cells(store, run):
        with Image.open(cell.image_path) as image:
            verdict = judge(image, cell.prompt)
        key = (not cell.is_base, cell.ema, cell.epoch or 0, cell.file_name)
        table[key][cell.prompt_role].append(verdict.score)
        if cell.prompt_role == "target":
            table[key]["colour"].append(verdict.matches.get("colour", False))
    out = []
    for (candidate, ema, epoch, file_name), values in sorted(table.items()):
        mean = {k: sum(v) / len(v) for k, v in values.items() if v}
        weights = ("EMA" if ema else "raw") if candidate else "base"
        out.append({"checkpoint": file_name, "epoch": epoch, "weights": weights,
                    "target": mean.get("target"), "colour": mean.get("colour"), "holdout": mean.get("holdout"),
                    "images": sum(len(v) for k, v in values.items() if k != "colour")})
    return out


def print_oracle(ctx: DemoContext) -> list[dict]:
    rows = oracle_per_checkpoint(ctx.store, DEMO_RUN)
    print("\noracle (toy-world ground truth): purple prompts = mean attribute score and share drawn purple; "
          "holdout = known-colour prompts")
    print(f"{'checkpoint':<34} {'epoch':>5} {'weights':>7} {'purple':>7} {'colour':>7} {'holdout':>8}")
    for row in rows:
        print(f"{row['checkpoint']:<34} {row['epoch']:>5} {row['weights']:>7} {row['target']:>7.2f} {row['colour']:>7.2f} "
              f"{row['holdout']:>8.2f}")
    return rows


def score(ctx: DemoContext) -> None:
    from .scoring.backbone import BackboneSpec
    from .scoring.registry import ScoreConfig
    from .scoring.runner import score_run

    config = ScoreConfig(backbone=BackboneSpec.toy(), reference=ctx.models / "purple-data", progress=ctx.progress)
    report = score_run(ctx.store, DEMO_RUN, config)
    done = ", ".join(f"{name} {count}" for name, count in report.computed.items())
    print(f"\nscored with the toy CLIP in {report.seconds:.1f} s: {done}")


def print_recommendations(ctx: DemoContext) -> None:
    """The recommendation of each series beside the oracle's best set, then how the bad variants rank."""
    from .demo_truth import best_set_check, pair_orders
    from .scoring.results import AnalysisConfig

    for ema in (False, True):
        check = best_set_check(ctx.store, DEMO_RUN, AnalysisConfig(primary="clip_t", ema=ema))
        r, b = check.recommended_oracle, check.oracle_best_estimate
        epochs = ", ".join(str(info.epoch) if info.series == DEMO_RUN else info.file_name for info in check.best_set)
        print(f"\n{check.series}: recommended {check.recommended.file_name} (epoch {check.recommended.epoch}, "
              f"oracle {r.mean:.2f}); the oracle's best is epoch {check.oracle_best.epoch} ({b.mean:.2f}, 95% CI "
              f"{b.ci_low:.2f} to {b.ci_high:.2f}); within that CI: epochs {epochs} -> "
              f"{'inside' if check.inside else 'OUTSIDE'} the oracle's best set")
        for verdict in check.recommendation.verdicts:
            if verdict.status == "excluded":
                print(f"  {verdict.reason}")
    names = [_name(ctx, "purple", 1), _name(ctx, OVERCOOKED, None), _name(ctx, MEMORISED, None)]
    names = [n for n in names if n is not None]
    recommended = best_set_check(ctx.store, DEMO_RUN, AnalysisConfig(primary="clip_t", ema=False)).recommended
    orders = pair_orders(ctx.store, DEMO_RUN, [recommended.file_name, *names], "clip_t", AnalysisConfig())
    print("\npairs the oracle orders (paired difference on purple prompts, first minus second): does clip_t agree?")
    for order in orders:
        verdict = {None: "oracle: no clear order", True: "agrees", False: "DISAGREES"}[order.agrees]
        print(f"  {order.a.file_name} vs {order.b.file_name}: oracle {order.oracle.mean:+.2f}, "
              f"clip_t {order.metric.mean:+.3f} -> {verdict}")


def _name(ctx: DemoContext, series: str, epoch: int | None) -> str | None:
    from .scoring.results import run_checkpoints

    for info in run_checkpoints(ctx.store, DEMO_RUN).values():
        if info.series == series and not info.ema and (epoch is None or info.epoch == epoch):
            return info.file_name
    return None


def run_demo(store_path: Path | None, progress: bool = True, settings: DemoSettings = DemoSettings()) -> int:
    from .status import render_status, store_status
    from .store import default_store_path, open_store

    root = Path(store_path) if store_path is not None else default_store_path()
    with open_store(root) as store:
        ctx = DemoContext(store, root, settings, progress)
        train_lora(ctx)
        failed = sample(ctx)
        print_oracle(ctx)
        score(ctx)
        print_recommendations(ctx)
        if settings.sweep is not None:
            sweep_settings(ctx, settings.sweep)
            portability(ctx, settings.sweep)
        print("\n" + render_status(store_status(store.db)))
    print(f"\nimages in {root / 'images'} (every PNG carries A1111 infotext and a ComfyUI workflow); "
          f"checkpoints in {ctx.models}")
    print(f"see `evalsvc status --store {root}`")
    return 1 if failed else 0
