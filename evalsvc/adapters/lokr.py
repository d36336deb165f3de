"""LoKr: a Kronecker product of two factors, each full, low-rank or Tucker (KronA/LoKr; LyCORIS functional/lokr.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32, fitted

KEYS = frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"})
# Each side is full or factored: lokr_w1, or lokr_w1_a with lokr_w1_b.
REQUIRED = ({"lokr_w1", "lokr_w1_a"}, {"lokr_w1", "lokr_w1_b"}, {"lokr_w2", "lokr_w2_a"}, {"lokr_w2", "lokr_w2_b"})


@dataclass(frozen=True)
class LokrLayer(AdapterLayer):
    """delta = scale * kron(w1, w2), where w1 = w1_a @ w1_b and w2 = w2_a @ w2_b (or t2 ×1 w2_a ×2 w2_b) when factored."""

    w1: torch.Tensor | None
    w1_a: torch.Tensor | None
    w1_b: torch.Tensor | None
    w2: torch.Tensor | None
    w2_a: torch.Tensor | None
    w2_b: torch.Tensor | None
    t2: torch.Tensor | None
    scale: float

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w1 = f32(self.w1, weight) if self.w1 is not None else f32(self.w1_a, weight) @ f32(self.w1_b, weight)
        if self.w2 is not None:
            w2 = f32(self.w2, weight)
        elif self.t2 is not None:
            # w2_a: (rank, out), w2_b: (rank, in), t2: (rank, rank, kh, kw)
            w2 = torch.einsum("i j ..., j r, i p -> p r ...", f32(self.t2, weight), f32(self.w2_b, weight),
                              f32(self.w2_a, weight))
        else:
            rank, *rest = self.w2_b.shape
            w2 = (f32(self.w2_a, weight) @ f32(self.w2_b, weight).reshape(rank, -1)).reshape(-1, *rest)
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return fitted(self.scale * torch.kron(w1.contiguous(), w2.contiguous()), weight)


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None) -> LokrLayer:
    """alpha / rank of the factored side (w2 if both are), and scale 1 when both factors are full (as LyCORIS)."""
    get = parts.get
    factored = get("lokr_w2_b") if get("lokr_w2") is None else get("lokr_w1_b") if get("lokr_w1") is None else None
    scale = alpha / factored.shape[0] if alpha and factored is not None else 1.0
    return LokrLayer(component, module, get("lokr_w1"), get("lokr_w1_a"), get("lokr_w1_b"), get("lokr_w2"),
                     get("lokr_w2_a"), get("lokr_w2_b"), get("lokr_t2"), scale)
