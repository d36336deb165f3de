"""DoRA, weight-decomposed low-rank adaptation (Liu et al. 2024): the merged weight's direction with a trained
magnitude, in LyCORIS/kohya form (`dora_scale`) and PEFT form (`lora_magnitude_vector`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32


@dataclass(frozen=True)
class DoraLayer(AdapterLayer):
    """merged = m * (W + d) / ‖W + d‖, the norm taken per output row (`per_output`) or per input column."""

    inner: AdapterLayer  # the low-rank change d (LoRA, LoHa or LoKr)
    magnitude: torch.Tensor
    per_output: bool
    eps: float  # LyCORIS adds float32's eps to the norm; PEFT adds nothing

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        merged = weight + self.inner.delta(weight)
        ones = (1,) * (weight.dim() - 1)
        if self.per_output:
            norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(merged.shape[0], *ones)
            magnitude = f32(self.magnitude, weight).reshape(merged.shape[0], *ones)
        else:
            norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
            norm = norm.reshape(merged.shape[1], *ones).transpose(0, 1)
            magnitude = f32(self.magnitude, weight).reshape(norm.shape)
        return merged * (magnitude / (norm + self.eps)) - weight

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.inner.tensors(), "magnitude": self.magnitude}


def lycoris_dora(inner: AdapterLayer, dora_scale: torch.Tensor) -> DoraLayer:
    """`dora_scale` of shape (out, 1, ...) decomposes per output row, (1, in, ...) per input column."""
    per_output = dora_scale.shape[0] > 1
    return DoraLayer(inner.component, inner.module, inner, dora_scale, per_output, torch.finfo(torch.float32).eps)


def peft_dora(inner: AdapterLayer, magnitude: torch.Tensor) -> DoraLayer:
    """PEFT's magnitude has one entry per output channel and its norm no epsilon."""
    return DoraLayer(inner.component, inner.module, inner, magnitude, True, 0.0)
