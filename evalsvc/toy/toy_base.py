"""The committed toy base model (SD1.5 architecture, trained on the toy world by our trainer).

It is stored compactly under `assets/toy-sd15`: the UNet, VAE and text encoder as float16
safetensors with their configs, the scheduler config and `build.json` (how it was built, how long
it took, its oracle figures). The tokenizer is not stored: it is the real CLIP tokenizer, rebuilt
offline. `materialize_toy_base` writes a complete float32 diffusers folder (what users' bases
look like) for the catalog and the trainer. Rebuild with `python -m trainer.toyworld.build_base`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TOY_BASE_DIR = Path(__file__).parent / "assets" / "toy-sd15"
_COMPONENTS = ("unet", "vae", "text_encoder")


def save_toy_base(pipe, out: Path, report: dict) -> Path:
    """Store `pipe`'s weights as float16 with configs, and `report` as `build.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in _COMPONENTS:
        model = getattr(pipe, name)
        model.to(torch.float16).save_pretrained(out / name, safe_serialization=True)
        model.to(torch.float32)
    pipe.scheduler.save_pretrained(out / "scheduler")
    (out / "build.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def load_toy_base(folder: Path = TOY_BASE_DIR):
    """The toy base as a float32 StableDiffusionPipeline."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .tokenizer import clip_tokenizer

    folder = Path(folder)
    if not (folder / "unet" / "config.json").exists():
        raise FileNotFoundError(f"{folder}: no toy base here; rebuild it with `python -m trainer.toyworld.build_base`")
    return StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32),
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
        tokenizer=clip_tokenizer(),
        scheduler=EulerDiscreteScheduler.from_pretrained(folder / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def materialize_toy_base(target: Path, folder: Path = TOY_BASE_DIR) -> Path:
    """A complete diffusers folder of the toy base at `target` (written once; kept when already there)."""
    target = Path(target)
    if not (target / "model_index.json").exists():
        load_toy_base(folder).save_pretrained(target, safe_serialization=True)
    return target


def toy_base_report(folder: Path = TOY_BASE_DIR) -> dict:
    return json.loads((Path(folder) / "build.json").read_text(encoding="utf-8"))
