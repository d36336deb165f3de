"""What every adapter layer is: a change to one base weight, computed from that weight in float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AdapterLayer:
    """One trained change to the weight of `component`'s submodule `module`."""

    component: str  # "unet", "text_encoder" or "text_encoder_2"
    module: str  # the submodule's dotted path in that component

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        """merged weight minus `weight` at strength 1 (float32, `weight`'s shape and device)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors by name, for messages about shapes that do not fit."""
        return {name: value for name, value in vars(self).items() if isinstance(value, torch.Tensor)}


def f32(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` as float32 on `like`'s device."""
    return tensor.to(like.device, torch.float32)


def fitted(delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`delta` in `weight`'s shape; ValueError when its element count says it belongs to another weight."""
    if delta.numel() != weight.numel():
        raise ValueError(f"delta of shape {tuple(delta.shape)} does not fit weight {tuple(weight.shape)}")
    return delta.reshape(weight.shape)


def rank_scale(alpha: float | None, rank: int) -> float:
    """alpha / rank, where a missing or zero alpha means alpha = rank, as kohya and LyCORIS train it."""
    return 1.0 if not alpha else alpha / rank
