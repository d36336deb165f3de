"""Deep-fried (overcooked) image statistics that need no weights, and an overcook score built from them.

Images are a batch of RGB images, uint8 `(N, H, W, 3)` or float in [0, 1]; all statistics are
computed on the [0, 1] scale in float64, per image:

- `saturation`: mean HSV saturation, (max - min) / max of the three channels, 0 where max is 0.
- `clipped`: share of pixels with any channel <= 1/255 or >= 254/255 (uint8 values 0, 1, 254, 255).
- `contrast`: RMS contrast, the population std of Rec.601 luma 0.299 R + 0.587 G + 0.114 B
  (on the gamma-encoded values, as PIL's "L" mode); at most 0.5.
- `high_frequency`: share of the luma's spectral energy (|FFT|², mean removed) at radial frequencies
  above `cutoff` cycles/pixel (default 0.25); 0 for a flat image. A pixel checkerboard gives 1,
  white noise about 1 - π/16 ≈ 0.80.

`overcook_score` combines them into one number per image, higher = more fried.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

VERSION = "2"  # 2: the spread comes from every base image, the mean from the same prompt's
CLIP_LOW = 1 / 255
CLIP_HIGH = 254 / 255
HIGH_FREQUENCY_CUTOFF = 0.25  # cycles per pixel
LUMA_601 = (0.299, 0.587, 0.114)
STD_FLOOR = 0.01  # smallest reference spread a z-score divides by (all statistics lie in [0, 1])


def as_unit_rgb(images) -> np.ndarray:
    """`images` (uint8 or float in [0, 1], `(N, H, W, 3)`, numpy or torch) as float64 in [0, 1]."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"expected RGB images shaped (N, H, W, 3) with N >= 1, got {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected uint8 or float images, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError("float images must be finite and within [0, 1]")
    return array


@dataclass(frozen=True)
class OvercookStats:
    """Per-image statistics, each a float64 array of shape (N,)."""

    saturation: np.ndarray
    clipped: np.ndarray
    contrast: np.ndarray
    high_frequency: np.ndarray

    def __post_init__(self):
        shapes = {np.shape(getattr(self, f.name)) for f in fields(self)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"statistics must be 1-D arrays of one length, got shapes {sorted(shapes)}")

    def __len__(self) -> int:
        return len(self.saturation)

    def as_matrix(self) -> np.ndarray:
        """The statistics as columns of an (N, 4) array, in field order."""
        return np.stack([getattr(self, f.name) for f in fields(self)], axis=1)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """Mean HSV saturation per image of unit-scale `rgb` (N, H, W, 3)."""
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    s = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    return s.mean(axis=(1, 2))


def clipped(rgb: np.ndarray) -> np.ndarray:
    """Share of pixels per image with any channel <= 1/255 or >= 254/255."""
    eps = 1e-9  # so that uint8 1 and 254, divided by 255, count
    hit = (rgb <= CLIP_LOW + eps) | (rgb >= CLIP_HIGH - eps)
    return hit.any(axis=-1).mean(axis=(1, 2))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec.601 luma (N, H, W) of unit-scale `rgb`."""
    return rgb @ np.asarray(LUMA_601)


def contrast(rgb: np.ndarray) -> np.ndarray:
    """RMS contrast per image: population std of the Rec.601 luma."""
    return luma(rgb).std(axis=(1, 2))


def high_frequency(rgb: np.ndarray, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> np.ndarray:
    """Share of the luma's spectral energy above `cutoff` cycles/pixel (radial), mean removed."""
    if not 0.0 < cutoff < np.sqrt(0.5):
        raise ValueError(f"cutoff must lie in (0, 0.707) cycles/pixel, got {cutoff}")
    y = luma(rgb)
    y = y - y.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(y)) ** 2
    fy = np.fft.fftfreq(y.shape[1])[:, None]
    fx = np.fft.fftfreq(y.shape[2])[None, :]
    high = np.sqrt(fy**2 + fx**2) > cutoff
    total = power.sum(axis=(1, 2))
    above = (power * high).sum(axis=(1, 2))
    variance = total / y[0].size ** 2  # Parseval; a flat image has none and scores 0
    return np.divide(above, total, out=np.zeros_like(total), where=variance > 1e-18)


def overcook_stats(images, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> OvercookStats:
    """The four statistics of each image in `images` (uint8 or [0, 1] float, (N, H, W, 3))."""
    rgb = as_unit_rgb(images)
    return OvercookStats(saturation=saturation(rgb), clipped=clipped(rgb), contrast=contrast(rgb),
                         high_frequency=high_frequency(rgb, cutoff))


def overcook_score(stats: OvercookStats, reference: OvercookStats | None = None,
                   std_floor: float = STD_FLOOR, spread: OvercookStats | None = None) -> np.ndarray:
    """One overcook value per image, higher = more fried.

    With a `reference` (e.g. the base model's images of the same prompt): the mean over the four
    statistics of the z-score (x - mean_ref) / max(std, std_floor), where std (ddof=0) is that of
    `spread` (e.g. every base image of the run) or, without one, of `reference` itself. A few seeds of one
    prompt say little about how much an image may vary, so the scorer takes the spread from all of the base's
    images; the floor keeps a spread of zero (say, no clipped pixels at all) from dividing by zero. Without a
    reference: the mean of the four raw statistics. The two scales differ; never compare values computed
    both ways.
    """
    values = stats.as_matrix()
    if reference is None:
        return values.mean(axis=1)
    spread = reference if spread is None else spread
    if len(spread) < 2:
        raise ValueError(f"the spread needs at least 2 images, got {len(spread)}")
    if not std_floor > 0:
        raise ValueError(f"std_floor must be positive, got {std_floor}")
    z = (values - reference.as_matrix().mean(axis=0)) / np.maximum(spread.as_matrix().std(axis=0), std_floor)
    return z.mean(axis=1)
