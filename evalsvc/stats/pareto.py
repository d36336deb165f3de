"""The Pareto front: points no other point beats on every objective at once."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping


def pareto_front(points: Mapping[Hashable, tuple[float, ...]], higher_is_better: tuple[bool, ...]) -> list:
    """Names of the non-dominated points, in input order.

    q dominates p when q is at least as good on every objective and strictly better on one;
    identical points do not dominate each other, so duplicates on the front are all kept.
    """
    oriented = {}
    for name, point in points.items():
        if len(point) != len(higher_is_better):
            raise ValueError(f"point {name!r} has {len(point)} objectives, expected {len(higher_is_better)}")
        if not all(math.isfinite(v) for v in point):
            raise ValueError(f"point {name!r} has a NaN or infinite objective: {point}")
        oriented[name] = tuple(v if up else -v for v, up in zip(point, higher_is_better))

    def dominated(p: tuple[float, ...]) -> bool:
        return any(all(x >= y for x, y in zip(q, p)) and q != p for q in oriented.values())

    return [name for name, p in oriented.items() if not dominated(p)]
