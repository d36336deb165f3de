"""Blind A/B votes: issue a pair, record one answer per issued pair, and read votes back for Bradley–Terry.

A pair is two candidate checkpoints of a run on the same prompt, seed and CFG. The pair of checkpoints is
drawn with weight exp(-|s_i - s_j|) / (1 + n_ij) (s: current Bradley–Terry strengths, n_ij: votes between
them so far), so close and little-compared candidates come up most; the cell is drawn uniformly among the
cells both have; the sides are a fair coin. Everything the browser gets before the vote is opaque: the
pair's token and one fresh token per image (`secrets.token_urlsafe`), never a run, checkpoint, epoch or
file name. A vote names the pair's token; it is refused when the token was never issued, was issued to
another voter, has expired or has been answered (the token is the votes table's primary key, so a replay,
even a concurrent one, is stored once).

Functions take a DuckDB connection or cursor, so each of the app's worker threads passes its own.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from .errors import InputError
from .stats.bradley_terry import Comparison, fit_strengths

ANSWERS = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad"}


class VoteRefused(InputError):
    """A vote that cannot be recorded (unknown, expired, foreign or already answered pair)."""


@dataclass(frozen=True)
class VoteConfig:
    expires_seconds: float = 900.0


@dataclass(frozen=True)
class IssuedPair:
    """What a voter is shown: opaque ids only, and the prompt both images answer."""

    token: str
    left_image: str
    right_image: str
    prompt: str


@dataclass(frozen=True)
class CastVote:
    """A recorded vote with the identities revealed after it."""

    left: str  # checkpoint file names
    right: str
    answer: str  # A, B, tie, both_bad
    winner: str | None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def votable_cells(db, run: str) -> dict[tuple, dict[str, tuple[str, str]]]:
    """{(prompt_id, seed, cfg): {checkpoint sha: (cell key, prompt)}} of the run's sampled candidate cells."""
    rows = db.execute(
        "SELECT g.prompt_id, w.seed, w.cfg, w.checkpoint, g.key, w.prompt FROM grid_cells g "
        "JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN run_checkpoints rc ON rc.run = g.run AND rc.sha256 = w.checkpoint "
        "WHERE g.run = ? AND rc.role = 'candidate' ORDER BY g.key", [run]).fetchall()
    cells: dict[tuple, dict[str, tuple[str, str]]] = defaultdict(dict)
    for prompt_id, seed, cfg, sha, key, prompt in rows:
        cells[(prompt_id, int(seed), float(cfg))][sha] = (key, prompt)
    return dict(cells)


def run_comparisons(db, run: str) -> list[Comparison]:
    """The run's votes as Bradley–Terry comparisons between checkpoint shas."""
    outcome = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}
    rows = db.execute("SELECT left_checkpoint, right_checkpoint, answer FROM votes WHERE run = ? ORDER BY voted_at, "
                      "token", [run]).fetchall()
    return [Comparison(left, right, outcome[ANSWERS[answer]]) for left, right, answer in rows]


def pair_weights(players: list[str], comparisons: list[Comparison]) -> dict[tuple[str, str], float]:
    """exp(-|s_i - s_j|) / (1 + n_ij) for every pair of players (i < j in list order)."""
    strengths = dict(zip(players, fit_strengths(players, comparisons))) if players else {}
    counts: dict[frozenset, int] = defaultdict(int)
    for c in comparisons:
        counts[frozenset((c.a, c.b))] += 1
    return {(a, b): math.exp(-abs(strengths[a] - strengths[b])) / (1 + counts[frozenset((a, b))])
            for i, a in enumerate(players) for b in players[i + 1:]}


def issue_pair(db, run: str, voter: str, config: VoteConfig = VoteConfig(),
               rng: np.random.Generator | None = None) -> IssuedPair:
    """Draw a pair for `voter` and record it as issued; raises InputError when the run has nothing to vote on."""
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(64))
    cells = votable_cells(db, run)
    players = sorted({sha for by_sha in cells.values() for sha in by_sha})
    shared = {pair: [cell for cell, by_sha in cells.items() if pair[0] in by_sha and pair[1] in by_sha]
              for pair in itertools.combinations(players, 2)}
    weights = {pair: w for pair, w in pair_weights(players, run_comparisons(db, run)).items() if shared[pair]}
    if not weights:
        raise InputError(f"run {run!r} has no two candidate checkpoints sampled on a common prompt, seed and CFG")
    pairs = list(weights)
    p = np.array([weights[pair] for pair in pairs])
    first, second = pairs[int(rng.choice(len(pairs), p=p / p.sum()))]
    cell = shared[(first, second)][int(rng.integers(len(shared[(first, second)])))]
    left, right = (first, second) if rng.random() < 0.5 else (second, first)
    (left_key, prompt), (right_key, _) = cells[cell][left], cells[cell][right]
    issued = IssuedPair(secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(16), prompt)
    now = _now()
    db.execute("INSERT INTO vote_pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [issued.token, run, voter, left_key, right_key, issued.left_image, issued.right_image, now,
                now + timedelta(seconds=config.expires_seconds)])
    return issued


def issued_image(db, image_token: str, images_root: Path) -> Path | None:
    """The image file behind an opaque image id of a pair that is still open, else None."""
    row = db.execute(
        "SELECT s.image_path FROM vote_pairs v JOIN samples s ON s.key = CASE WHEN v.left_image = ? THEN v.left_key "
        "ELSE v.right_key END WHERE (v.left_image = ? OR v.right_image = ?) AND v.expires_at > ? "
        "AND v.token NOT IN (SELECT token FROM votes)", [image_token, image_token, image_token, _now()]).fetchone()
    return Path(images_root) / row[0] if row else None


def record_vote(db, token: str, voter: str, answer: str) -> CastVote:
    """Store `voter`'s answer to the pair `token` once; refuses anything else with VoteRefused."""
    import duckdb

    if answer not in ANSWERS:
        raise VoteRefused(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    row = db.execute(
        "SELECT v.run, v.voter, v.expires_at, wl.checkpoint, wr.checkpoint, g.prompt_id, wl.seed, wl.cfg "
        "FROM vote_pairs v JOIN work wl ON wl.key = v.left_key JOIN work wr ON wr.key = v.right_key "
        "JOIN grid_cells g ON g.key = v.left_key AND g.run = v.run WHERE v.token = ?", [token]).fetchone()
    if row is None:
        raise VoteRefused("no such pair was issued")
    run, issued_to, expires_at, left, right, prompt_id, seed, cfg = row
    if issued_to != voter:
        raise VoteRefused("this pair was issued to another voter")
    if expires_at <= _now():
        raise VoteRefused("this pair has expired; ask for a new one")
    try:
        db.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [token, run, voter, left, right, prompt_id, seed, cfg, answer, _now()])
    except (duckdb.ConstraintException, duckdb.TransactionException):
        raise VoteRefused("this pair has already been answered") from None
    names = dict(db.execute("SELECT sha256, file_name FROM checkpoints WHERE sha256 IN (?, ?)",
                            [left, right]).fetchall())
    winner = {"A": names[left], "B": names[right]}.get(answer)
    return CastVote(names[left], names[right], answer, winner)
