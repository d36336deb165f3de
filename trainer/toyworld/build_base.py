"""Rebuild the committed toy base model: `python -m trainer.toyworld.build_base --seed 0`.

1. draws the training set: every scene of the known colours (purple is held out), with captions;
2. trains the VAE on shapes of random colours (`models.train_vae`);
3. trains the UNet from scratch with the project's own trainer (`network.kind = "full"`, caption
   dropout so that classifier-free guidance works, v-prediction), conditioned on the toy CLIP's frozen
   text encoder, keeping an EMA, in stages: each stage is one cosine schedule, and the next starts
   from its EMA weights;
4. saves the EMA weights of the last epoch as fp16 safetensors under `evalsvc/toy/assets/toy-sd15`,
   with `build.json` (seed, settings, wall time, oracle accuracy on every known scene).

Without `--work` the build runs in a temporary folder; with it, a build can resume after the VAE
(`--vae`) or after a stage (`--first-stage`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from evalsvc.toy.toy_base import TOY_BASE_DIR, save_toy_base

from .evaluate import OracleSampling, oracle_accuracy
from .models import VaeTraining, toy_pipeline, train_vae
from .world import KNOWN_COLOURS, all_scenes, write_dataset


@dataclass(frozen=True)
class BaseStage:
    """One `evalsvc train` run (cosine schedule, EMA); the next stage starts from its EMA weights."""

    epochs: int
    learning_rate: float
    warmup_steps: int = 100


@dataclass(frozen=True)
class BaseBuild:
    """The base's recipe. The text encoder is the toy CLIP's, frozen; only the UNet is trained.

    v-prediction (as SD2): with epsilon prediction the loss barely weighs the high-noise steps, where
    the layout must come from the text, and the UNet learnt colour but drew every shape and position
    alike; v-prediction weighs them fully, without min-SNR weighting (which would undo that).
    """

    seed: int = 0
    images: int = 1800
    batch_size: int = 32
    caption_dropout: float = 0.1
    ema_decay: float = 0.995
    prediction_type: str = "v_prediction"
    stages: tuple[BaseStage, ...] = (BaseStage(100, 6e-4),)
    eval_seeds: tuple[int, ...] = (1, 2)
    vae: VaeTraining = field(default_factory=VaeTraining)


def train_config(build: BaseBuild, stage: BaseStage, index: int, base: Path, data: Path, out: Path):
    from trainer.config import TrainConfig

    steps = stage.epochs * -(-build.images // build.batch_size)
    return TrainConfig.from_dict({
        "model": {"base": str(base), "arch": "sd15"},
        "network": {"kind": "full", "train_text_encoder": False},
        "train": {"output_dir": str(out), "output_name": f"toybase-stage{index + 1}" if index else "toybase",
                  "seed": build.seed + index, "epochs": stage.epochs, "batch_size": build.batch_size,
                  "learning_rate": stage.learning_rate, "scheduler": "cosine",
                  "warmup_steps": min(stage.warmup_steps, steps), "noise_offset": 0.05},
        "ema": {"enabled": True, "decay": build.ema_decay},
        "dataset": {"folder": str(data), "resolution": 64, "caption_dropout": build.caption_dropout,
                    "cache_latents": True},
    }, source="toy base build")


def _set_prediction_type(folder: Path, prediction_type: str) -> None:
    """Write `prediction_type` into the scheduler config of a diffusers folder the build owns."""
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    if config["prediction_type"] != prediction_type:
        path.write_text(json.dumps({**config, "prediction_type": prediction_type}, indent=2))


def _train_stage(build: BaseBuild, index: int, base: Path, data: Path, work: Path, progress: bool):
    """Run stage `index` from the diffusers folder `base`; returns its EMA weights as a pipeline, also saved
    as the diffusers folder `work/stage<k>` (where a resumed build starts the next stage)."""
    from diffusers import StableDiffusionPipeline

    from trainer.train import train

    _set_prediction_type(base, build.prediction_type)
    config = train_config(build, build.stages[index], index, base, data, work / "epochs")
    bar = tqdm(desc=f"toy base stage {index + 1}/{len(build.stages)}", unit="step", disable=not progress)
    last = None
    for event in train(config):
        if event.kind == "step":
            bar.update(1)
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}")
        elif event.kind == "epoch":
            last = event.paths
    bar.close()
    trained = StableDiffusionPipeline.from_single_file(last[-1], config=str(base), local_files_only=True,
                                                       safety_checker=None, requires_safety_checker=False)
    trained.save_pretrained(work / f"stage{index + 1}", safe_serialization=True)
    return trained


def build_base(build: BaseBuild, out: Path, work: Path, vae_dir: Path | None = None, progress: bool = True,
               earlier_seconds: float = 0.0, first_stage: int = 0) -> dict:
    """Train the toy base from nothing and save it to `out`; returns the figures written to `build.json`.

    A build can resume: `vae_dir` is a VAE trained by `train_vae(build.vae)`; with `first_stage=k`,
    `work/stage<k>` holds the result of stage k. `earlier_seconds` is the wall time those parts took.
    """
    from diffusers import AutoencoderKL

    started = time.time()
    data = write_dataset(work / "data", build.images, build.seed, KNOWN_COLOURS)
    if first_stage:
        base = work / f"stage{first_stage}"
    else:
        if vae_dir is not None:
            vae = AutoencoderKL.from_pretrained(vae_dir)
        else:
            vae = train_vae(build.vae, progress=progress)
            vae.save_pretrained(work / "vae")
        toy_pipeline(vae, build.seed).save_pretrained(work / "init", safe_serialization=True)
        base = work / "init"
    trained = None
    for index in range(first_stage, len(build.stages)):
        trained = _train_stage(build, index, base, data, work, progress)
        base = work / f"stage{index + 1}"
    seconds = time.time() - started + earlier_seconds
    sampling = OracleSampling(seeds=build.eval_seeds)
    figures = oracle_accuracy(trained, all_scenes(KNOWN_COLOURS), sampling)
    held_out = oracle_accuracy(trained, all_scenes(("purple",)), sampling)
    report = {"build": asdict(build), "training_seconds": round(seconds),
              "resumed": {"first_stage": first_stage, "vae": str(vae_dir) if vae_dir else None},
              "oracle_known": figures, "oracle_held_out_purple": held_out,
              "oracle_sampling": asdict(sampling), "torch": torch.__version__,
              "weights": "EMA of the last epoch of the last stage, stored as float16"}
    save_toy_base(trained, out, report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=TOY_BASE_DIR)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--vae", type=Path, help="resume: a toy VAE folder trained by `train_vae` with this seed")
    parser.add_argument("--first-stage", type=int, default=0,
                        help="resume: stages already done; --work must hold stage<N> from the same build")
    parser.add_argument("--earlier-seconds", type=float, default=0.0,
                        help="resume: wall time of the parts done earlier, so build.json gives the whole")
    args = parser.parse_args(argv)
    build = BaseBuild(seed=args.seed)
    if args.first_stage and not args.work:
        parser.error("--first-stage needs --work")
    with tempfile.TemporaryDirectory() as tmp:
        report = build_base(build, args.out, args.work or Path(tmp), args.vae, earlier_seconds=args.earlier_seconds,
                            first_stage=args.first_stage)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
