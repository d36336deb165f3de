"""LoRA (Hu et al. 2021), LoCon for convolutions and Tucker LoCon (`lora_mid`, LyCORIS functional/locon.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32, fitted, rank_scale

KEYS = frozenset({"lora_down.weight", "lora_up.weight", "lora_mid.weight"})
REQUIRED = ({"lora_down.weight"}, {"lora_up.weight"})


@dataclass(frozen=True)
class LoraLayer(AdapterLayer):
    """delta = scale * up @ down, or with a Tucker core: scale * (mid ×1 up ×2 down)."""

    down: torch.Tensor  # (rank, in, [kh, kw]) or (rank, in, 1, 1) with a mid
    up: torch.Tensor  # (out, rank, [1, 1])
    scale: float  # alpha / rank; alpha / sqrt(rank) for rsLoRA
    mid: torch.Tensor | None = None  # (rank, rank, kh, kw)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        up = f32(self.up, weight).reshape(self.up.shape[0], -1)
        down = f32(self.down, weight).reshape(self.rank, -1)
        if up.shape[1] != self.rank:
            raise ValueError("rank mismatch")
        if self.mid is None:
            return fitted(self.scale * (up @ down), weight)
        core = torch.einsum("m n ..., i m, n j -> i j ...", f32(self.mid, weight), up, down)
        if core.shape != weight.shape:
            raise ValueError("Tucker core does not fit")
        return self.scale * core


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None) -> LoraLayer:
    """A kohya/LyCORIS LoRA, LoCon or Tucker LoCon from its tensors (names without the module stem)."""
    down = parts["lora_down.weight"]
    return LoraLayer(component, module, down, parts["lora_up.weight"], rank_scale(alpha, down.shape[0]),
                     parts.get("lora_mid.weight"))
