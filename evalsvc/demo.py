"""`evalsvc demo`: the whole loop on the toy world, offline, in about 9 minutes on 2 CPU cores.

1. writes the committed toy base (trained on the toy world without purple) as a diffusers folder;
2. draws a small purple dataset and trains a LoRA that teaches purple, saving raw and EMA weights
   at every epoch (the raw series is exactly a run without EMA: the EMA never feeds back);
3. the trainer registers every epoch under the run `purple` and queues the `toyworld` grid;
4. the engine samples the queue (base included, for reference);
5. the toy world's oracle reads every image back and prints adherence per epoch, raw and EMA;
6. `evalsvc score` scores every image with the toy CLIP (clip_t, clip_i, nearest_train, oracle) and
   the recommendation (earliest epoch not significantly worse than the best on clip_t) is printed
   for the raw and the EMA series, beside the oracle's best.

Each step is a function of `DemoContext`, so later steps (scores, the app) slot in after these.
Everything is written under the store folder (`./evalsvc-store` or `$EVALSVC_STORE`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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
    """Train the purple LoRA unless every epoch of it is already registered (a re-run samples what is missing)."""
    from evalsvc.toy.toy_base import materialize_toy_base
    from trainer.toyworld.world import write_dataset
    from trainer.train import train

    base = materialize_toy_base(ctx.models / "toy-sd15")
    data = ctx.models / "purple-data"
    if not data.exists():
        write_dataset(data, ctx.settings.images, seed=1, colours=("purple",))
    config = lora_config(ctx, base, data)
    done = ctx.store.db.execute(
        "SELECT count(*) FROM run_checkpoints WHERE run = ? AND role = 'candidate'", [DEMO_RUN]).fetchone()[0]
    if done >= 2 * ctx.settings.epochs:
        print(f"LoRA {DEMO_RUN!r}: all {ctx.settings.epochs} epochs already trained and registered")
        return
    print(f"training LoRA {DEMO_RUN!r} on {ctx.settings.images} purple images for {ctx.settings.epochs} epochs "
          f"(raw and EMA weights saved every epoch)", flush=True)
    for event in train(config, ctx.store):
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


def print_recommendations(ctx: DemoContext, oracle_rows: list[dict]) -> None:
    from .scoring.results import AnalysisConfig, run_recommendation

    for ema, series in ((False, "raw"), (True, "EMA")):
        recommendation = run_recommendation(ctx.store, DEMO_RUN, AnalysisConfig(primary="clip_t", ema=ema))
        rows = [r for r in oracle_rows if r["weights"] == series]
        oracle_best = max(rows, key=lambda r: r["target"])
        print(f"\n{series}: recommended {recommendation.checkpoint} (epoch {recommendation.epoch}, CFG "
              f"{recommendation.cfg:g}); the oracle's best is epoch {oracle_best['epoch']} "
              f"(purple score {oracle_best['target']:.2f})")
        for reason in recommendation.reasons[:2]:
            print(f"  {reason}")


def run_demo(store_path: Path | None, progress: bool = True, settings: DemoSettings = DemoSettings()) -> int:
    from .status import render_status, store_status
    from .store import default_store_path, open_store

    root = Path(store_path) if store_path is not None else default_store_path()
    with open_store(root) as store:
        ctx = DemoContext(store, root, settings, progress)
        train_lora(ctx)
        failed = sample(ctx)
        oracle_rows = print_oracle(ctx)
        score(ctx)
        print_recommendations(ctx, oracle_rows)
        print("\n" + render_status(store_status(store.db)))
    print(f"\nimages in {root / 'images'} (every PNG carries A1111 infotext); checkpoints in {ctx.models}")
    print(f"see `evalsvc status --store {root}`")
    return 1 if failed else 0
