"""Training noise and loss weights: noise offset, SNR and Min-SNR-gamma weighting."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")


def offset_noise(
    latents_shape: Sequence[int],
    noise_offset: float,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Noise offset (crosslabs / kohya): ``randn(shape) + noise_offset * randn(B, C, 1, 1)``.

    Draws the full-size noise first, then the per-(sample, channel) offset, both from
    ``generator`` (on the generator's device).
    """
    shape = tuple(int(s) for s in latents_shape)
    if len(shape) < 3:
        raise ValueError(f"latents_shape must be (B, C, *spatial), got {shape}")
    if noise_offset < 0:
        raise ValueError(f"noise_offset must be >= 0, got {noise_offset}")
    device = generator.device if generator is not None else None
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    offset_shape = shape[:2] + (1,) * (len(shape) - 2)
    offset = torch.randn(offset_shape, generator=generator, device=device, dtype=dtype)
    return noise + noise_offset * offset


def snr(alphas_cumprod: Tensor, timesteps: Tensor) -> Tensor:
    """Signal-to-noise ratio ``alpha_bar_t / (1 - alpha_bar_t)`` at each timestep (float32)."""
    alpha_bar = alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps.long()]
    return (alpha_bar / (1.0 - alpha_bar)).to(torch.float32)


def min_snr_weights(alphas_cumprod: Tensor, timesteps: Tensor, gamma: float, prediction_type: str) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for an MSE loss on the model's target.

    epsilon: ``min(snr, gamma) / snr``; v_prediction: ``min(snr, gamma) / (snr + 1)``.
    For epsilon, an SNR of 0 (zero-terminal-SNR schedules) gets the limit weight 1.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    s = snr(alphas_cumprod, timesteps)
    if prediction_type == "epsilon":
        return torch.clamp(gamma / s, max=1.0)
    return torch.clamp(s, max=gamma) / (s + 1.0)
