"""Paired comparisons on shared (prompt, seed) cells, and each checkpoint's best setting."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from ..setting import Setting
from .bootstrap import BootstrapConfig, Estimate, checked_keys, cluster_bootstrap


def paired_difference(a: Mapping[tuple[Hashable, Hashable], float], b: Mapping[tuple[Hashable, Hashable], float],
                      config: BootstrapConfig = BootstrapConfig()) -> Estimate:
    """Mean of a - b over the (prompt, seed) keys both share, with a nested cluster-bootstrap interval.

    Pairing removes the prompt and seed effects common to both sides; keys only one side has are
    ignored, and `n` counts the shared ones.
    """
    checked_keys(a)
    checked_keys(b)
    shared = [k for k in a if k in b]
    if not shared:
        raise ValueError(f"no shared (prompt, seed) keys to pair: {len(a)} vs {len(b)} keys")
    return cluster_bootstrap([a[k] - b[k] for k in shared], [k[0] for k in shared], [k[1] for k in shared], config)


def best_setting(means: Mapping[Setting, Estimate], higher_is_better: bool) -> Setting:
    """The setting with the best mean; exactly equal means go to the first in `Setting.sort_key` order
    (the lower CFG, the fewer steps, ...)."""
    if not means:
        raise ValueError("no settings to choose from")
    sign = 1.0 if higher_is_better else -1.0
    return max(sorted(means, key=Setting.sort_key), key=lambda s: sign * means[s].mean)
