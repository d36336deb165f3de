"""The oracle's measures over many pictures: the ground truth behind each flag.

- `copy_share`: the share of pictures that are copies of a training picture (`oracle.same_picture`): memorised;
- `detail_spread`: how far apart the uncaptioned detail of pictures of one caption lies (mean pairwise distance of
  object centre, size and marker place): near 0 when every seed draws the same composition (overfit);
- `share_with`: the share of pictures the oracle reads with an attribute (shaded, the character, a colour, the
  defect): on prompts that do not ask for it, a leak (polluting; the elbow's defect);
- `adherence`: the mean oracle score against each picture's caption (undertrained, overcooked and the best set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import combinations

import numpy as np
from PIL import Image

from .oracle import Perception, judge, perceive, same_picture


def perceive_all(images: Iterable[Image.Image]) -> list[Perception]:
    return [perceive(image) for image in images]


def copy_share(pictures: Sequence[Perception], training: Sequence[Perception]) -> float:
    """The share of `pictures` that are one of the `training` pictures."""
    if not pictures:
        raise ValueError("copy_share needs at least one picture")
    return sum(any(same_picture(p, t) for t in training) for p in pictures) / len(pictures)


def _detail(p: Perception) -> np.ndarray | None:
    if p.centre is None or p.marker is None:
        return None
    return np.array([p.centre[0], p.centre[1], p.half, p.marker[0], p.marker[1]])


def detail_spread(pictures: Sequence[Perception]) -> float | None:
    """Mean pairwise distance of the pictures' detail (object centre and size, marker place; fractions of the
    image side); None when fewer than two pictures show an object and a marker."""
    vectors = [v for v in map(_detail, pictures) if v is not None]
    if len(vectors) < 2:
        return None
    return float(np.mean([np.linalg.norm(a - b) for a, b in combinations(vectors, 2)]))


def share_with(pictures: Sequence[Perception], reads: Callable[[Perception], bool]) -> float:
    """The share of `pictures` the oracle reads as `reads` says (e.g. `lambda p: p.style == "shaded"`)."""
    if not pictures:
        raise ValueError("share_with needs at least one picture")
    return sum(bool(reads(p)) for p in pictures) / len(pictures)


def adherence(images: Sequence[Image.Image], captions: Sequence[str]) -> float:
    """The mean oracle score of each image against its caption."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"adherence needs as many captions as images, got {len(captions)} and {len(images)}")
    return float(np.mean([judge(image, caption).score for image, caption in zip(images, captions)]))
