"""(IA)³ (Liu et al. 2022): a learned per-channel scaling of the weight (LyCORIS modules/ia3.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32

KEYS = frozenset({"weight", "on_input"})
REQUIRED = ({"weight"}, {"on_input"})


@dataclass(frozen=True)
class Ia3Layer(AdapterLayer):
    """delta = W * w along the input channels (`on_input`) or the output channels."""

    scaling: torch.Tensor
    on_input: bool

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w = f32(self.scaling, weight)
        if self.on_input:
            return weight * w
        return (weight.transpose(0, 1) * w).transpose(0, 1)


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None) -> Ia3Layer:
    return Ia3Layer(component, module, parts["weight"], bool(parts["on_input"].item()))
