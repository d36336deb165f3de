"""Learning-rate schedules (the formulas of ``diffusers.optimization``) and optimizer construction.

``lr_factor`` is the multiplier of the base learning rate at a step; it matches
``diffusers.optimization.get_scheduler`` exactly:

- ``constant``: ``get_constant_schedule_with_warmup`` (diffusers' "constant_with_warmup"; with
  ``warmup_steps=0`` it equals diffusers' "constant");
- ``linear``: ``get_linear_schedule_with_warmup``;
- ``cosine``: ``get_cosine_schedule_with_warmup`` with its default half cosine (``restarts`` unused);
- ``cosine_with_restarts``: ``get_cosine_with_hard_restarts_schedule_with_warmup`` with
  ``num_cycles=restarts``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from evalsvc.errors import InputError

LR_KINDS = ("constant", "linear", "cosine", "cosine_with_restarts")
OPTIMIZER_KINDS = ("adamw", "lion", "prodigy")

# optimizer kind -> (module, class name, package to install)
_OPTIONAL_OPTIMIZERS = {
    "lion": ("lion_pytorch", "Lion", "lion-pytorch"),
    "prodigy": ("prodigyopt", "Prodigy", "prodigyopt"),
}


def _check_schedule(kind: str, warmup_steps: int, total_steps: int, restarts: int) -> None:
    if kind not in LR_KINDS:
        raise ValueError(f"lr schedule must be one of {LR_KINDS}, got {kind!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in 0..total_steps ({total_steps}), got {warmup_steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")


def _factor(step: int, total_steps: int, kind: str, warmup_steps: int, restarts: int) -> float:
    # Formulas copied from diffusers.optimization, operation for operation, so values agree bit-exactly.
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(restarts) * progress) % 1.0))))


def lr_factor(step: int, total_steps: int, kind: str, warmup_steps: int, restarts: int = 1) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warmup from 0, then ``kind``."""
    _check_schedule(kind, warmup_steps, total_steps, restarts)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return _factor(step, total_steps, kind, warmup_steps, restarts)


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int, restarts: int = 1
) -> LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` whose multiplier is ``lr_factor``."""
    _check_schedule(kind, warmup_steps, total_steps, restarts)

    def factor(step: int) -> float:
        return _factor(step, total_steps, kind, warmup_steps, restarts)

    return LambdaLR(optimizer, factor)


def make_optimizer(params_groups: Iterable, kind: str, lr: float) -> torch.optim.Optimizer:
    """AdamW (torch), Lion (lion-pytorch) or Prodigy (prodigyopt), each with its library's defaults.

    Lion and Prodigy are imported only when asked for; a missing package is an InputError that
    names it. Prodigy estimates the step size itself; its authors recommend ``lr=1.0``.
    """
    if kind not in OPTIMIZER_KINDS:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_KINDS}, got {kind!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if kind == "adamw":
        return torch.optim.AdamW(params_groups, lr=lr)
    module_name, class_name, package = _OPTIONAL_OPTIMIZERS[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"optimizer {kind!r} needs the package {package}: pip install {package}") from exc
    return getattr(module, class_name)(params_groups, lr=lr)
