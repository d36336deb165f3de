"""Two-stage (prompt, then seed) cluster bootstrap of a mean, with a percentile interval.

Images of one prompt are correlated, so prompts are the independent units: each resample draws
prompts with replacement, then, within each drawn prompt, that prompt's seeds with replacement.
The statistic is the mean over every drawn observation. With one prompt this reduces to a
bootstrap over its seeds; with one seed per prompt, to a bootstrap over prompts.

Draws are reproducible and independent of input order: observations are put in canonical
(prompt, seed) order, then `rng = numpy.random.default_rng(config.seed)` draws
`rng.integers(0, P, size=(B, P))` prompt indices and `rng.random((B, P, m))` uniforms, where
P is the number of prompts, m the most seeds of any prompt and B the resamples; the k-th seed
draw of a prompt with n seeds is its observation number floor(u * n), for k < n.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Resamples are processed in chunks of about this many (resample, prompt, seed) cells.
_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True)
class BootstrapConfig:
    """How many resamples, the two-sided confidence level and the generator's seed."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise ValueError(f"resamples must be a positive integer, got {self.resamples!r}")
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            raise ValueError(f"confidence must be strictly between 0 and 1, got {self.confidence!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval; n observations over `clusters` prompts."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    clusters: int


def cluster_bootstrap(values: Sequence[float], prompts: Sequence[Hashable], seeds: Sequence[Hashable],
                      config: BootstrapConfig = BootstrapConfig()) -> Estimate:
    """Mean of `values` with a nested (prompts, then seeds within a prompt) percentile interval.

    Observation i belongs to (prompts[i], seeds[i]); each pair may occur once.
    """
    table, counts, n = _grouped(values, prompts, seeds)
    mean = float(np.mean(np.asarray(values, dtype=float)))
    if n == 1:
        return Estimate(mean, mean, mean, 1, 1)
    means = _resample_means(table, counts, config)
    alpha = 1.0 - config.confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(mean, float(low), float(high), n, len(counts))


def bootstrap_means(values: Sequence[float], prompts: Sequence[Hashable], seeds: Sequence[Hashable],
                    config: BootstrapConfig = BootstrapConfig()) -> np.ndarray:
    """The resampled means behind `cluster_bootstrap`'s interval (same draws for the same config), for tests
    that need the distribution itself."""
    table, counts, _ = _grouped(values, prompts, seeds)
    return _resample_means(table, counts, config)


def estimate_scores(scores: Mapping[tuple[Hashable, Hashable], float],
                    config: BootstrapConfig = BootstrapConfig()) -> Estimate:
    """`cluster_bootstrap` of a {(prompt, seed): value} mapping."""
    keys = checked_keys(scores)
    return cluster_bootstrap([scores[k] for k in keys], [k[0] for k in keys], [k[1] for k in keys], config)


def checked_keys(scores: Mapping) -> list:
    """The keys of a score mapping, checked to be (prompt, seed) pairs."""
    keys = list(scores)
    bad = [k for k in keys if not (isinstance(k, tuple) and len(k) == 2)]
    if bad:
        raise ValueError(f"score keys must be (prompt, seed) pairs, got {bad[0]!r}")
    return keys


def _canonical_order(keys: list) -> list[int]:
    try:
        return sorted(range(len(keys)), key=keys.__getitem__)
    except TypeError:  # prompts or seeds of mixed, unorderable types
        return sorted(range(len(keys)), key=lambda i: repr(keys[i]))


def _grouped(values, prompts, seeds) -> tuple[np.ndarray, np.ndarray, int]:
    """A (P, m) table of values, row p holding prompt p's counts[p] observations in seed order."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
    n = values.size
    if n == 0:
        raise ValueError("cannot bootstrap: no observations")
    if len(prompts) != n or len(seeds) != n:
        raise ValueError(f"values, prompts and seeds differ in length: {n}, {len(prompts)}, {len(seeds)}")
    keys = list(zip(prompts, seeds))
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} value(s) are NaN or infinite, first at (prompt, seed) {keys[first]!r}")
    if len(set(keys)) != n:
        seen = set()
        duplicate = next(k for k in keys if k in seen or seen.add(k))
        raise ValueError(f"(prompt, seed) {duplicate!r} occurs more than once")
    rows: dict = {}
    for i in _canonical_order(keys):
        rows.setdefault(keys[i][0], []).append(values[i])
    counts = np.array([len(r) for r in rows.values()])
    table = np.zeros((len(rows), counts.max()))
    for p, row in enumerate(rows.values()):
        table[p, : len(row)] = row
    return table, counts, n


def _resample_means(table: np.ndarray, counts: np.ndarray, config: BootstrapConfig) -> np.ndarray:
    """The statistic of each of config.resamples nested resamples (draw protocol in the module doc)."""
    n_prompts, width = table.shape
    rng = np.random.default_rng(config.seed)
    prompt_draws = rng.integers(0, n_prompts, size=(config.resamples, n_prompts))
    slots = np.arange(width)
    chunk = max(1, _CHUNK_CELLS // (n_prompts * width))
    means = np.empty(config.resamples)
    for start in range(0, config.resamples, chunk):
        drawn = prompt_draws[start: start + chunk]  # (b, P)
        drawn_counts = counts[drawn]  # (b, P)
        uniforms = rng.random((len(drawn), n_prompts, width))
        seed_draws = (uniforms * drawn_counts[..., None]).astype(np.intp)  # (b, P, m), < count
        picked = table[drawn[..., None], seed_draws]
        used = slots < drawn_counts[..., None]
        means[start: start + chunk] = np.where(used, picked, 0.0).sum(axis=(1, 2)) / drawn_counts.sum(axis=1)
    return means

