"""Bradley–Terry fitting against closed forms, an independent MM fit (Hunter 2004) and simulated truth."""

import math

import numpy as np
import pytest

from evalsvc.stats import BootstrapConfig
from evalsvc.stats.bradley_terry import ELO_SCALE, Comparison, fit_strengths, leaderboard, votes_to_separate


def _votes(pairs):
    return [Comparison(a, b, outcome) for a, b, outcome, count in pairs for _ in range(count)]


def test_two_players_have_the_closed_form_log_odds_with_ties_as_half_wins():
    votes = _votes([("x", "y", "a", 7), ("x", "y", "b", 2), ("y", "x", "tie", 2), ("x", "y", "both_bad", 1)])
    s = fit_strengths(["x", "y"], votes, prior=1e-9)
    wins_x, wins_y = 7 + 1.5, 2 + 1.5
    assert s[0] - s[1] == pytest.approx(math.log(wins_x / wins_y), abs=1e-6)
    assert s.sum() == pytest.approx(0, abs=1e-12)


def _mm_fit(n, votes, iterations=5000):
    """Hunter's MM algorithm for Bradley–Terry (gamma_i = W_i / sum_j n_ij / (gamma_i + gamma_j))."""
    wins = np.zeros(n)
    games = np.zeros((n, n))
    for a, b, score in votes:
        wins[a] += score
        wins[b] += 1 - score
        games[a, b] += 1
        games[b, a] += 1
    gamma = np.ones(n)
    for _ in range(iterations):
        gamma = wins / (games / (gamma[:, None] + gamma[None, :])).sum(axis=1)
        gamma /= np.exp(np.log(gamma).mean())
    return np.log(gamma)


def test_many_players_match_an_mm_fit_and_recover_the_simulated_strengths():
    rng = np.random.default_rng(3)
    truth = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    truth -= truth.mean()
    raw, votes = [], []
    for _ in range(20000):
        a, b = rng.choice(5, 2, replace=False)
        p = 1 / (1 + math.exp(-(truth[a] - truth[b])))
        u = rng.random()
        outcome = "tie" if abs(u - p) < 0.03 else ("a" if u < p else "b")
        votes.append(Comparison(int(a), int(b), outcome))
        raw.append((int(a), int(b), votes[-1].score_a))
    fitted = fit_strengths(list(range(5)), votes, prior=1e-9)
    np.testing.assert_allclose(fitted, _mm_fit(5, raw), atol=1e-6)
    np.testing.assert_allclose(fitted, truth, atol=0.08)


def test_leaderboard_orders_counts_and_brackets_the_fit():
    votes = _votes([("e8", "e1", "a", 30), ("e8", "e1", "b", 5), ("e4", "e1", "a", 20), ("e4", "e1", "b", 10),
                    ("e8", "e4", "a", 14), ("e8", "e4", "b", 10), ("e8", "e4", "tie", 4)])
    board = leaderboard(["e1", "e4", "e8"], votes, BootstrapConfig(resamples=300, seed=1))
    assert [r.player for r in board.ratings] == ["e8", "e4", "e1"]
    fitted = fit_strengths(["e1", "e4", "e8"], votes)
    for r, s in zip(sorted(board.ratings, key=lambda r: r.player), (fitted[0], fitted[1], fitted[2])):
        assert r.rating == pytest.approx(1000 + ELO_SCALE * s)
        assert r.ci_low < r.rating < r.ci_high
    assert board.counts[("e8", "e4")] == board.counts[("e4", "e8")] == 28
    assert board.wins[("e8", "e4")] == 16 and board.wins[("e4", "e8")] == 12
    assert {r.player: r.votes for r in board.ratings} == {"e8": 63, "e4": 58, "e1": 65}
    assert board.votes_to_separate_top_two > 0  # 16 of 28 between the top two is not yet clear


def test_votes_to_separate():
    assert votes_to_separate(0.5, 0.1, 100, 0.95) == 0  # already 5 standard errors apart
    # 1.96 * 0.5 / 0.25 = 3.92 -> (3.92)^2 = 15.4 times the votes: 1537 in all, 1437 more
    assert votes_to_separate(0.25, 0.5, 100, 0.95) == math.ceil(100 * (1.959964 * 0.5 / 0.25) ** 2) - 100
    assert votes_to_separate(0.0, 0.1, 100, 0.95) == math.inf


def test_bad_votes_are_refused():
    with pytest.raises(ValueError, match="outcome"):
        Comparison("x", "y", "left")
    with pytest.raises(ValueError, match="two different"):
        Comparison("x", "x", "a")
    with pytest.raises(ValueError, match="not in the list"):
        leaderboard(["x", "y"], [Comparison("x", "z", "a")])
