"""Paired noise: the starting latent of a cell depends only on its seed and size.

Every checkpoint and every CFG value of a (prompt, seed, size) starts from the same latent, so
differences between images come from the weights. The latent is drawn on the CPU in float32
from `torch.Generator().manual_seed(seed)`, exactly as a plain diffusers pipeline call with
that generator does, so an image's seed reproduces it in diffusers and across devices.
"""

from __future__ import annotations

import torch


def cell_generator(seed: int) -> torch.Generator:
    """The generator of one cell: first its initial latent, then any ancestral step noise."""
    return torch.Generator("cpu").manual_seed(int(seed))


def initial_latents(generators: list[torch.Generator], latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """A (B, C, H, W) float32 CPU tensor, row i drawn from generators[i]."""
    return torch.cat([torch.randn((1, *latent_shape), generator=g, dtype=torch.float32) for g in generators])
