"""Cosine similarities between embeddings, and SSIM between images.

Embeddings are (N, D) arrays (numpy or torch), normalised to unit length here (so already
L2-normalised CLIP embeddings pass through unchanged); a zero row is an error. Every result is
float64 numpy. Convention for CLIP score: `clip_score` is the raw cosine in [-1, 1] (what the
scorers store); `clip_score_scaled` is torchmetrics' CLIPScore per image, max(100 cos, 0).
"""

from __future__ import annotations

import numpy as np

from .overcook import as_unit_rgb

VERSION = "1"
SSIM_WINDOW = 11  # torchmetrics' gaussian window (sigma 1.5) spans 11 pixels


def as_matrix(x, name: str = "embeddings") -> np.ndarray:
    """`x` (numpy or torch, (N, D), N >= 1) as a finite float64 array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def l2_normalize(x, name: str = "embeddings") -> np.ndarray:
    """Rows of `x` scaled to unit length."""
    array = as_matrix(x, name)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} contain a zero vector, which has no direction")
    return array / norms


def cosine_matrix(a, b) -> np.ndarray:
    """(Na, Nb) cosines between every row of `a` and every row of `b`."""
    a, b = l2_normalize(a, "a"), l2_normalize(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} and {b.shape[1]}")
    return np.clip(a @ b.T, -1.0, 1.0)


def _rowwise_cosine(a, b, names: tuple[str, str]) -> np.ndarray:
    a, b = l2_normalize(a, names[0]), l2_normalize(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} {a.shape} and {names[1]} {b.shape} must have the same shape")
    return np.clip((a * b).sum(axis=1), -1.0, 1.0)


def clip_score(image_emb, text_emb) -> np.ndarray:
    """Raw cosine of each image with its own prompt (row i with row i), in [-1, 1]."""
    return _rowwise_cosine(image_emb, text_emb, ("image_emb", "text_emb"))


def clip_score_scaled(image_emb, text_emb) -> np.ndarray:
    """torchmetrics' CLIPScore convention per image: max(100 * cosine, 0)."""
    return np.maximum(100.0 * clip_score(image_emb, text_emb), 0.0)


def embedding_distance(a, b) -> np.ndarray:
    """Row-wise cosine distance 1 - cos(a_i, b_i), in [0, 2]."""
    return 1.0 - _rowwise_cosine(a, b, ("a", "b"))


def mean_similarity_to_set(image_emb, reference_emb) -> np.ndarray:
    """clip_i: each image's mean cosine with every reference image."""
    return cosine_matrix(image_emb, reference_emb).mean(axis=1)


def nearest_similarity(image_emb, reference_emb) -> tuple[np.ndarray, np.ndarray]:
    """Memorisation: each image's highest cosine with a reference image, and that image's index
    (the first one on ties)."""
    cos = cosine_matrix(image_emb, reference_emb)
    index = cos.argmax(axis=1)
    return cos[np.arange(len(cos)), index], index


def diversity(embs) -> float:
    """Mean cosine distance 1 - cos over all unordered pairs of rows; needs at least 2 rows
    (raises ValueError otherwise rather than returning NaN)."""
    n = as_matrix(embs).shape[0]
    if n < 2:
        raise ValueError(f"diversity needs at least 2 embeddings, got {n}")
    cos = cosine_matrix(embs, embs)
    upper = np.triu_indices(n, k=1)
    return float((1.0 - cos[upper]).mean())


def ssim(images_a, images_b) -> np.ndarray:
    """SSIM of each pair (a_i, b_i) through torchmetrics (gaussian window 11, sigma 1.5, data_range 1.0,
    reflect padding, mean over channels and pixels, computed in float32); images uint8 or [0, 1] float,
    (N, H, W, 3)."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = as_unit_rgb(images_a), as_unit_rgb(images_b)
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {a.shape[1:3]}")
    # float32: torch's float64 convolutions on a CPU are ~50x slower, and SSIM needs no more precision
    ta, tb = (torch.from_numpy(x).permute(0, 3, 1, 2).float().contiguous() for x in (a, b))
    values = structural_similarity_index_measure(ta, tb, data_range=1.0, reduction="none")
    return values.numpy().astype(np.float64)
