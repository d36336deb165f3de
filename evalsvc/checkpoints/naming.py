"""The name a checkpoint goes by, and the epoch, step and EMA flag that the names trainers write carry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# An "ema" token bounded by the start/end of the stem or by - _ . ("cinema" does not count).
_EMA = re.compile(r"^ema(?:[-_.]|$)|[-_.]ema(?=[-_.]|$)", re.IGNORECASE)
# OneTrainer: {prefix}{%Y-%m-%d_%H-%M-%S}-save-{global_step}-{epoch}-{epoch_step}
_ONETRAINER = re.compile(
    r"^(?P<prefix>.*?)\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-save-(?P<step>\d+)-(?P<epoch>\d+)-\d+$"
)
# kohya: {name}-{epoch:06d}, {name}-step{step:08d}; without a name "epoch-…", "at-step…", "last".
_KOHYA_EPOCH = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})$")
_KOHYA_STEP = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8})$")
_KOHYA_NAMELESS = {"epoch", "at", "last"}
# diffusers' training scripts: accelerate `save_state` into {output_dir}/checkpoint-{global_step}.
_DIFFUSERS_STEP = re.compile(r"^checkpoint-(?P<step>\d+)$")
# File names every checkpoint of a diffusers/PEFT/OneTrainer run shares (optionally with a precision variant).
GENERIC_STEMS = ("pytorch_lora_weights", "diffusion_pytorch_model", "model", "pytorch_model", "lora",
                 "adapter_model")
_GENERIC = re.compile(rf"^(?:{'|'.join(GENERIC_STEMS)})(?:\.(?:fp16|bf16|fp32))?$")
# Component folders a generic file sits in, and what each adds to the name (diffusers' EMA UNet is unet_ema/).
_COMPONENT_DIRS = {"unet": "", "unet_ema": "-ema", "transformer": "", "lora": ""}


@dataclass(frozen=True)
class NameInfo:
    """What a checkpoint's file name says; ``name`` is "" for kohya's name-less stems."""

    name: str
    epoch: int | None = None
    step: int | None = None
    ema: bool = False
    trainer: str | None = None  # "kohya" | "onetrainer" | "diffusers" | None when the name has no trainer pattern

    def __post_init__(self):
        for field in ("epoch", "step"):
            value = getattr(self, field)
            if value is not None and value < 0:
                raise ValueError(f"{field} must be >= 0, got {value}")


def parse_checkpoint_name(stem: str) -> NameInfo:
    """Parse a checkpoint file stem (no suffix) into name, epoch, step, EMA flag and trainer."""
    ema = bool(_EMA.search(stem))
    core = _EMA.sub("", stem) if ema else stem
    if m := _ONETRAINER.match(core):
        name = m["prefix"].rstrip("-_. ")
        return NameInfo(name, int(m["epoch"]), int(m["step"]), ema, "onetrainer")
    if m := _KOHYA_STEP.match(core):
        return NameInfo(_kohya_name(m["name"]), None, int(m["step"]), ema, "kohya")
    if m := _KOHYA_EPOCH.match(core):
        return NameInfo(_kohya_name(m["name"]), int(m["epoch"]), None, ema, "kohya")
    if core in _KOHYA_NAMELESS:
        return NameInfo("", None, None, ema, "kohya")
    if m := _DIFFUSERS_STEP.match(core):
        return NameInfo("", None, int(m["step"]), ema, "diffusers")
    return NameInfo(core, None, None, ema, None)


def _kohya_name(name: str) -> str:
    return "" if name in _KOHYA_NAMELESS else name


def is_generic_stem(stem: str) -> bool:
    """Whether a file stem is one that every checkpoint of a run shares (`pytorch_lora_weights`, `model`, ...)."""
    return bool(_GENERIC.match(stem))


def checkpoint_file_name(path) -> str:
    """The name a checkpoint goes by everywhere (catalog, UI, reports, infotext): its file or folder name, or for a
    generic file name the folder that tells it apart, with the file's suffix.

    `out/checkpoint-500/pytorch_lora_weights.safetensors` is `checkpoint-500.safetensors`,
    `out/checkpoint-500/unet_ema/diffusion_pytorch_model.safetensors` is `checkpoint-500-ema.safetensors`.
    """
    path = Path(path)
    if path.is_dir() or not is_generic_stem(path.stem):
        return path.name
    folder, tag = path.absolute().parent, ""
    while folder.name in _COMPONENT_DIRS:
        tag, folder = _COMPONENT_DIRS[folder.name] + tag, folder.parent
    if not folder.name:
        return path.name
    return f"{folder.name}{tag}{path.suffix}"


def checkpoint_stem(path) -> str:
    """`checkpoint_file_name` without its suffix (a folder's whole name): what epoch, step and EMA are parsed from."""
    path = Path(path)
    name = checkpoint_file_name(path)
    return name if path.is_dir() else Path(name).stem
