"""OFT (Qiu et al. 2023) and BOFT (Liu et al. 2024): an orthogonal rotation of the weight's output channels, as
LyCORIS computes it (functional/diag_oft.py, functional/boft.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32

KEYS = frozenset({"oft_blocks", "rescale"})
REQUIRED = ({"oft_blocks"},)


def cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R = (I + Q)(I - Q)^-1 for Q = B - Bᵀ, Q scaled down to norm `constraint` when it is larger (0: no limit)."""
    eye = torch.eye(blocks.shape[-1], device=blocks.device, dtype=blocks.dtype)
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.norm(q) + 1e-8
        if norm > constraint:
            q = q * constraint / norm
    return (eye + q) @ torch.linalg.inv(eye - q)


@dataclass(frozen=True)
class OftLayer(AdapterLayer):
    """Block-diagonal OFT: each block of `block_size` output channels becomes Rᵀ times itself (times `rescale`)."""

    blocks: torch.Tensor  # (block_count, block_size, block_size)
    constraint: float  # alpha * out_features, as LyCORIS reads its alpha
    rescale: torch.Tensor | None = None

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        blocks = f32(self.blocks, weight)
        count, size, _ = blocks.shape
        if count * size != weight.shape[0]:
            raise ValueError("OFT blocks do not cover the output channels")
        rotated = torch.einsum("k n m, k n ... -> k m ...", cayley(blocks, self.constraint),
                               weight.reshape(count, size, *weight.shape[1:])).reshape(weight.shape)
        return _rescaled(rotated, weight, self.rescale)


@dataclass(frozen=True)
class ButterflyOftLayer(AdapterLayer):
    """BOFT: `stages` butterfly factors, stage i mixing channels 2^i * block_size/2 apart."""

    blocks: torch.Tensor  # (stages, block_count, block_size, block_size)
    constraint: float
    rescale: torch.Tensor | None = None

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        blocks = f32(self.blocks, weight)
        stages, count, size, _ = blocks.shape
        if count * size != weight.shape[0]:
            raise ValueError("BOFT blocks do not cover the output channels")
        rotations = cayley(blocks, self.constraint)
        x = weight
        half = size // 2
        for stage in range(stages):
            stride = 2**stage * half
            x = x.unflatten(0, (-1, 2, stride)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, size))
            x = torch.einsum("b i j, b j ... -> b i ...", rotations[stage], x)
            x = x.flatten(0, 1).unflatten(0, (-1, stride, 2)).transpose(1, 2).flatten(0, 2)
        return _rescaled(x, weight, self.rescale)


def _rescaled(rotated: torch.Tensor, weight: torch.Tensor, rescale: torch.Tensor | None) -> torch.Tensor:
    merged = rotated if rescale is None else f32(rescale, weight) * rotated
    return merged - weight


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None,
               out_features: int) -> OftLayer | ButterflyOftLayer:
    blocks = parts["oft_blocks"]
    constraint = (alpha or 0.0) * out_features
    kind = {3: OftLayer, 4: ButterflyOftLayer}.get(blocks.dim())
    if kind is None:
        raise ValueError(f"oft_blocks of shape {tuple(blocks.shape)} is neither OFT (3-d) nor BOFT (4-d)")
    return kind(component, module, blocks, constraint, parts.get("rescale"))
