"""Bradley–Terry ratings from blind A/B votes, by maximum likelihood, with bootstrap intervals.

Model: P(i beats j) = 1 / (1 + exp(-(s_i - s_j))). A tie (and "both bad", which says the same about
their order) counts as half a win for each side, as the arenas that rank image models count it.
Strengths are fitted by Newton's method on the log-likelihood plus a weak Gaussian prior
(`prior` = 1 / variance in log-odds units; it keeps a player who won every vote finite and pins the
mean strength to 0), and reported on the Elo scale: rating = 1000 + 400 / ln(10) * s.

Intervals: `resamples` bootstrap draws of the votes with replacement, refitted; percentile bounds.
The votes still needed to separate the top two: with the difference d of their strengths and its
bootstrap standard error se after n votes between them (or overall), the variance shrinks as 1/n, so
d is significant at the chosen level once n' = n * (z * se / d)^2 votes are in; the estimate is
max(0, n' - n) (inf when d is 0).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from .bootstrap import BootstrapConfig

ELO_SCALE = 400.0 / math.log(10.0)
OUTCOMES = ("a", "b", "tie", "both_bad")


@dataclass(frozen=True)
class Comparison:
    """One vote: `a` and `b` are the players shown, `outcome` one of OUTCOMES."""

    a: Hashable
    b: Hashable
    outcome: str

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if self.a == self.b:
            raise ValueError(f"a vote compares two different players, got {self.a!r} twice")

    @property
    def score_a(self) -> float:
        """a's share of the win: 1, 0 or 1/2."""
        return {"a": 1.0, "b": 0.0}.get(self.outcome, 0.5)


@dataclass(frozen=True)
class Rating:
    player: Hashable
    rating: float  # Elo scale
    ci_low: float
    ci_high: float
    votes: int


@dataclass(frozen=True)
class Leaderboard:
    ratings: tuple[Rating, ...]  # best first
    wins: dict  # {(i, j): i's wins over j, ties counting 1/2}
    counts: dict  # {(i, j): votes between i and j} (both orders)
    votes_to_separate_top_two: float | None  # None with fewer than two players


def fit_strengths(players: Sequence[Hashable], comparisons: Sequence[Comparison], prior: float = 0.01,
                  iterations: int = 100) -> np.ndarray:
    """Maximum a posteriori strengths (log-odds scale, mean 0) of `players`, in their order."""
    index = {p: k for k, p in enumerate(players)}
    a = np.array([index[c.a] for c in comparisons], dtype=np.int64)
    b = np.array([index[c.b] for c in comparisons], dtype=np.int64)
    y = np.array([c.score_a for c in comparisons], dtype=np.float64)
    return _newton(len(players), a, b, y, np.ones(len(y)), prior, iterations)


def _newton(n: int, a, b, y, weight, prior: float, iterations: int) -> np.ndarray:
    s = np.zeros(n)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(s[a] - s[b])))
        residual = weight * (y - p)
        gradient = np.bincount(a, residual, n) - np.bincount(b, residual, n) - prior * s
        w = weight * p * (1 - p)
        hessian = np.diag(np.bincount(a, w, n) + np.bincount(b, w, n) + prior)
        np.add.at(hessian, (a, b), -w)
        np.add.at(hessian, (b, a), -w)
        step = np.linalg.solve(hessian, gradient)
        s += step
        if np.abs(step).max() < 1e-10:
            break
    return s - s.mean()


def leaderboard(players: Sequence[Hashable], comparisons: Sequence[Comparison],
                config: BootstrapConfig = BootstrapConfig(resamples=500), prior: float = 0.01) -> Leaderboard:
    """Ratings with bootstrap intervals, the win matrix and the votes still needed to separate the top two."""
    players = list(players)
    if len(set(players)) != len(players):
        raise ValueError("players must be distinct")
    unknown = {p for c in comparisons for p in (c.a, c.b)} - set(players)
    if unknown:
        raise ValueError(f"votes name players not in the list: {sorted(map(str, unknown))}")
    strengths = fit_strengths(players, comparisons, prior)
    index = {p: k for k, p in enumerate(players)}
    a = np.array([index[c.a] for c in comparisons], dtype=np.int64)
    b = np.array([index[c.b] for c in comparisons], dtype=np.int64)
    y = np.array([c.score_a for c in comparisons], dtype=np.float64)
    rng = np.random.default_rng(config.seed)
    draws = np.empty((config.resamples, len(players)))
    for r in range(config.resamples):
        weight = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(np.float64) \
            if len(y) else np.zeros(0)
        draws[r] = _newton(len(players), a, b, y, weight, prior, 100)
    tail = (1 - config.confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=0) if len(y) else (strengths, strengths)
    votes = np.bincount(a, minlength=len(players)) + np.bincount(b, minlength=len(players))
    order = np.argsort(-strengths, kind="stable")
    ratings = tuple(Rating(players[k], 1000 + ELO_SCALE * strengths[k], 1000 + ELO_SCALE * low[k],
                           1000 + ELO_SCALE * high[k], int(votes[k])) for k in order)
    wins, counts = {}, {}
    for c in comparisons:
        for first, second, share in ((c.a, c.b, c.score_a), (c.b, c.a, 1 - c.score_a)):
            wins[(first, second)] = wins.get((first, second), 0.0) + share
            counts[(first, second)] = counts.get((first, second), 0) + 1
    needed = None
    if len(players) >= 2:
        top, second = order[0], order[1]
        needed = votes_to_separate(strengths[top] - strengths[second], np.std(draws[:, top] - draws[:, second]),
                                   len(y), config.confidence)
    return Leaderboard(ratings, wins, counts, needed)


def votes_to_separate(difference: float, standard_error: float, votes: int, confidence: float) -> float:
    """More votes needed until `difference` (standard error `standard_error` after `votes` votes) is significant."""
    z = _normal_quantile(1 - (1 - confidence) / 2)
    if difference == 0 or votes == 0:
        return math.inf
    needed = votes * (z * standard_error / abs(difference)) ** 2
    return max(0.0, math.ceil(needed) - votes)


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))
