"""Epoch, step and EMA from the file names kohya sd-scripts and OneTrainer write."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class NameInfo:
    """What a checkpoint's file name says; ``name`` is "" for kohya's name-less stems."""

    name: str
    epoch: int | None = None
    step: int | None = None
    ema: bool = False
    trainer: str | None = None  # "kohya" | "onetrainer" | None when the name has no trainer pattern

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
    return NameInfo(core, None, None, ema, None)


def _kohya_name(name: str) -> str:
    return "" if name in _KOHYA_NAMELESS else name
