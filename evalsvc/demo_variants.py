"""The demo's deliberately bad LoRAs, registered beside the good one so that the scores must tell them apart.

- **overcooked**: the demo LoRA's recipe with the learning rate multiplied (x30 by default): "deep-fried"
  images, far from the base's colours and contrast;
- **memorised**: the same recipe on very few of the purple images (3) for many epochs: a LoRA that has seen
  three pictures, hundreds of times.

The undertrained one needs no training of its own: it is the good run's epoch 1. Each variant trains without
EMA and only its last epoch joins the demo run (under its own file name), so the grid samples it on the same
prompts, seeds and starting noise as every epoch of the good run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OVERCOOKED = "purple-overcooked"
MEMORISED = "purple-memorised"


@dataclass(frozen=True)
class BadVariants:
    overcook_lr_factor: float = 30.0
    overcook_epochs: int = 4
    memorised_images: int = 3
    memorised_repeats: int = 16  # kohya's folder repeats: each image is seen this often per epoch
    memorised_epochs: int = 60


def _variant_config(good, name: str, output_dir: Path, data: Path, *, learning_rate: float, epochs: int):
    """`good`'s recipe under another name, data, learning rate and length, without EMA or an eval queue."""
    from trainer.config import TrainConfig

    config = good.to_dict()
    config["train"].update(output_name=name, output_dir=str(output_dir), learning_rate=learning_rate, epochs=epochs)
    config["ema"] = {"enabled": False}
    config["dataset"]["folder"] = str(data)
    config.pop("eval", None)
    return TrainConfig.from_dict(config, source=f"demo variant {name}")


def variant_configs(good, models: Path, variants: BadVariants) -> list:
    """The trainer configs of the overcooked and the memorised LoRA, derived from the good run's `good`."""
    lr = good.train.learning_rate
    memorised_data = models / "memorised-data"
    return [
        _variant_config(good, OVERCOOKED, models / OVERCOOKED, Path(good.dataset.folder),
                        learning_rate=lr * variants.overcook_lr_factor, epochs=variants.overcook_epochs),
        _variant_config(good, MEMORISED, models / MEMORISED, memorised_data, learning_rate=lr,
                        epochs=variants.memorised_epochs),
    ]


def write_memorised_data(folder: Path, variants: BadVariants) -> None:
    """The first few images of the demo's purple set (same seed, so the same pictures), repeated."""
    from trainer.toyworld.world import write_dataset

    if not folder.exists():
        write_dataset(folder, variants.memorised_images, seed=1, colours=("purple",),
                      repeats=variants.memorised_repeats)


def train_bad_variants(ctx, good, run: str, variants: BadVariants) -> None:
    """Train each variant unless its last epoch is already in `run`, then register that epoch under `run`."""
    from evalsvc.catalog import add_checkpoints, run_file_names
    from evalsvc.sampling.grid import plan_grid
    from evalsvc.suites import load_suite
    from trainer.train import checkpoint_path, train

    write_memorised_data(ctx.models / "memorised-data", variants)
    registered = run_file_names(ctx.store.db, run)
    for config in variant_configs(good, ctx.models, variants):
        final = checkpoint_path(config, config.train.epochs, ema=False)
        if final.name in registered:
            print(f"bad variant {config.train.output_name!r}: already trained and registered")
            continue
        print(f"training the bad variant {config.train.output_name!r}: lr {config.train.learning_rate:g}, "
              f"{config.train.epochs} epochs on {config.dataset.folder}", flush=True)
        for _ in train(config, None):
            pass
        add_checkpoints(ctx.store, [final], run, base=Path(good.model.base))
    plan_grid(ctx.store, run, load_suite(good.eval.suite), good.eval.grid_options())

