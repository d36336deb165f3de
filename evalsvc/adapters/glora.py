"""GLoRA, generalised LoRA (Chavan et al. 2023): the weight is also mixed by a low-rank map (LyCORIS modules/glora.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32, fitted, rank_scale

KEYS = frozenset({"a1.weight", "a2.weight", "b1.weight", "b2.weight", "bm.weight"})
REQUIRED = ({"a1.weight"}, {"a2.weight"}, {"b1.weight"}, {"b2.weight"})


@dataclass(frozen=True)
class GloraLayer(AdapterLayer):
    """delta = scale * (W a1 a2 + b1 b2), a1: (in, rank), a2: (rank, in), b1: (out, rank), b2: (rank, in);
    with a Tucker core bm the b half is bm ×1 b1 ×2 b2."""

    a1: torch.Tensor
    a2: torch.Tensor
    b1: torch.Tensor
    b2: torch.Tensor
    scale: float
    bm: torch.Tensor | None = None

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        a1 = f32(self.a1, weight).reshape(self.a1.shape[0], -1)
        a2 = f32(self.a2, weight).reshape(self.a2.shape[0], -1)
        b1 = f32(self.b1, weight).reshape(self.b1.shape[0], -1)
        b2 = f32(self.b2, weight).reshape(self.b2.shape[0], -1)
        if a1.shape[0] != weight.shape[1] or a2.shape != (a1.shape[1], weight.shape[1]):
            raise ValueError("a1/a2 are not the (in, rank), (rank, in) pair LyCORIS writes")
        if self.bm is None:
            mixed_b = fitted(b1 @ b2, weight)
        else:
            mixed_b = torch.einsum("m n ..., i m, n j -> i j ...", f32(self.bm, weight), b1, b2)
        mixed_a = torch.einsum("o i ..., i j -> o j ...", torch.einsum("o i ..., i j -> o j ...", weight, a1), a2)
        return self.scale * fitted(mixed_b + mixed_a, weight)


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None) -> GloraLayer:
    a2 = parts["a2.weight"]
    return GloraLayer(component, module, parts["a1.weight"], a2, parts["b1.weight"], parts["b2.weight"],
                      rank_scale(alpha, a2.shape[0]), parts.get("bm.weight"))
