"""Blind A/B votes: issue a pair, record one answer per issued pair, and read votes back for Bradley–Terry.

A pair is two candidate checkpoints of a run on the same prompt, seed and setting (`evalsvc.setting`), or,
with `VoteConfig.pairing = "settings"`, one candidate at two settings on the same prompt and seed ("is 30
steps better than 20?"). The two players (checkpoints, or settings) are drawn with weight
exp(-|s_i - s_j|) / (1 + n_ij) (s: current Bradley–Terry strengths, n_ij: votes between them so far), so
close and little-compared players come up most; the cell is drawn uniformly among the cells both have; the
sides are a fair coin. Each vote records both sides' settings, and rankings are per setting. Everything the browser gets before the vote is opaque: the
pair's token and one fresh token per image (`secrets.token_urlsafe`), never a run, checkpoint, epoch or
file name. A vote names the pair's token; it is refused when the token was never issued, was issued to
another voter or session, has expired, was replaced or has been answered (the token is the votes table's
primary key, so a replay, even a concurrent one, is stored once).

Fairness: a voter holds one open pair at a time (asking for another records the open one as skipped, so a
voter cannot collect pairs and answer the ones she likes); a pair's images are served only to the session it
was issued to; a voter is never shown an image she was shown before (its identity may have been revealed to
her); and checkpoints flagged at a setting (overcooked, memorised: `scoring.results.flagged_at_settings`)
are left out of its pairs unless `VoteConfig.flagged` asks for them.

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
from .setting import Setting, varying_axes
from .stats.bradley_terry import Comparison, fit_strengths

ANSWERS = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad"}


class VoteRefused(InputError):
    """A vote that cannot be recorded (unknown, expired, foreign or already answered pair)."""


PAIRINGS = ("checkpoints", "settings")


@dataclass(frozen=True)
class VoteConfig:
    expires_seconds: float = 900.0
    pairing: str = "checkpoints"  # two checkpoints at one setting, or "settings": one checkpoint at two
    flagged: bool = False  # pair checkpoints flagged at a setting too (`serve --vote-flagged`)

    def __post_init__(self):
        if self.pairing not in PAIRINGS:
            raise InputError(f"vote pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")


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
    left_where: str = ""  # the two settings in words, by the axes they differ on ("" when they are the same)
    right_where: str = ""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def votable_cells(db, run: str, pairing: str = "checkpoints", voter: str | None = None,
                  flagged: bool = False) -> dict[tuple, dict[str, tuple[str, str, str]]]:
    """The run's sampled candidate cells grouped by what a pair shares, each group by player:
    {(prompt_id, seed, setting): {checkpoint sha: (cell key, prompt, setting)}} when pairing checkpoints,
    {(prompt_id, seed, checkpoint sha): {setting: (cell key, prompt, setting)}} when pairing settings.
    Without images `voter` was shown before, and (unless `flagged`) without checkpoints flagged at the setting."""
    from .scoring.results import flagged_at_settings

    rows = db.execute(
        "SELECT g.prompt_id, w.seed, g.setting, w.checkpoint, g.key, w.prompt FROM grid_cells g "
        "JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN run_checkpoints rc ON rc.run = g.run AND rc.sha256 = w.checkpoint "
        "WHERE g.run = ? AND rc.role = 'candidate' AND g.key NOT IN (SELECT left_key FROM vote_pairs WHERE voter = ? "
        "UNION ALL SELECT right_key FROM vote_pairs WHERE voter = ?) ORDER BY g.key, g.setting",
        [run, voter, voter]).fetchall()
    excluded = set() if flagged else set(flagged_at_settings(db, run))
    cells: dict[tuple, dict[str, tuple[str, str, str]]] = defaultdict(dict)
    for prompt_id, seed, setting, sha, key, prompt in rows:
        if (sha, setting) in excluded:
            continue
        group, player = ((prompt_id, int(seed), setting), sha) if pairing == "checkpoints" else \
            ((prompt_id, int(seed), sha), setting)
        cells[group].setdefault(player, (key, prompt, setting))
    return dict(cells)


def run_comparisons(db, run: str, setting: str | None = None) -> list[Comparison]:
    """The run's votes between two checkpoints at one setting, as Bradley–Terry comparisons between checkpoint
    shas; only those at `setting` (a setting key) when given."""
    outcome = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}
    rows = db.execute("SELECT left_checkpoint, right_checkpoint, answer FROM votes WHERE run = ? "
                      "AND left_setting IS NOT DISTINCT FROM right_setting AND left_checkpoint <> right_checkpoint "
                      "AND (? IS NULL OR left_setting = ?) ORDER BY voted_at, token", [run, setting, setting]).fetchall()
    return [Comparison(left, right, outcome[ANSWERS[answer]]) for left, right, answer in rows]


def setting_comparisons(db, run: str, checkpoint: str | None = None) -> list[Comparison]:
    """The run's votes between two settings of one checkpoint, as comparisons between setting keys (of one
    checkpoint sha when given)."""
    outcome = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}
    rows = db.execute("SELECT left_setting, right_setting, answer FROM votes WHERE run = ? "
                      "AND left_checkpoint = right_checkpoint AND left_setting <> right_setting "
                      "AND (? IS NULL OR left_checkpoint = ?) ORDER BY voted_at, token",
                      [run, checkpoint, checkpoint]).fetchall()
    return [Comparison(left, right, outcome[ANSWERS[answer]]) for left, right, answer in rows]


def pair_weights(players: list[str], comparisons: list[Comparison]) -> dict[tuple[str, str], float]:
    """exp(-|s_i - s_j|) / (1 + n_ij) for every pair of players (i < j in list order)."""
    strengths = dict(zip(players, fit_strengths(players, comparisons))) if players else {}
    counts: dict[frozenset, int] = defaultdict(int)
    for c in comparisons:
        counts[frozenset((c.a, c.b))] += 1
    return {(a, b): math.exp(-abs(strengths[a] - strengths[b])) / (1 + counts[frozenset((a, b))])
            for i, a in enumerate(players) for b in players[i + 1:]}


def skip_open_pairs(db, voter: str) -> int:
    """Record `voter`'s unanswered, unexpired pairs as skipped; returns how many."""
    now = _now()
    return len(db.execute("UPDATE vote_pairs SET skipped_at = ? WHERE voter = ? AND skipped_at IS NULL "
                          "AND expires_at > ? AND token NOT IN (SELECT token FROM votes) RETURNING token",
                          [now, voter, now]).fetchall())


def vote_count(db, run: str, voter: str) -> int:
    return db.execute("SELECT count(*) FROM votes WHERE run = ? AND voter = ?", [run, voter]).fetchone()[0]


def issue_pair(db, run: str, voter: str, config: VoteConfig = VoteConfig(),
               rng: np.random.Generator | None = None, session: str = "") -> IssuedPair:
    """Draw a pair for `voter` (logged in as `session`) and record it as issued, her open pair if any as
    skipped; raises InputError when the run has nothing (left) to vote on. Callers serialise calls per voter."""
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(64))
    skip_open_pairs(db, voter)
    cells = votable_cells(db, run, config.pairing, voter, config.flagged)
    players = sorted({player for by_player in cells.values() for player in by_player})
    shared = {pair: [cell for cell, by_player in cells.items() if pair[0] in by_player and pair[1] in by_player]
              for pair in itertools.combinations(players, 2)}
    history = run_comparisons(db, run) if config.pairing == "checkpoints" else setting_comparisons(db, run)
    rated = sorted({*players, *(p for c in history for p in (c.a, c.b))})  # strengths from every vote so far
    weights = {pair: w for pair, w in pair_weights(rated, history).items() if shared.get(pair)}
    if not weights:
        what = ("two candidate checkpoints sampled on a common prompt, seed and setting"
                if config.pairing == "checkpoints" else "a candidate sampled at two settings on a common prompt and seed")
        seen = db.execute("SELECT count(*) FROM vote_pairs WHERE run = ? AND voter = ?", [run, voter]).fetchone()[0]
        if seen:
            raise InputError(f"no pair left that you have not seen: {voter} has been shown every image of run "
                             f"{run!r} that could make a pair")
        raise InputError(f"run {run!r} has no {what}" + ("" if config.flagged else " (flagged ones left out)"))
    pairs = list(weights)
    p = np.array([weights[pair] for pair in pairs])
    first, second = pairs[int(rng.choice(len(pairs), p=p / p.sum()))]
    cell = shared[(first, second)][int(rng.integers(len(shared[(first, second)])))]
    left, right = (first, second) if rng.random() < 0.5 else (second, first)
    (left_key, prompt, left_setting), (right_key, _, right_setting) = cells[cell][left], cells[cell][right]
    issued = IssuedPair(secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(16), prompt)
    now = _now()
    db.execute("INSERT INTO vote_pairs (token, run, voter, left_key, right_key, left_image, right_image, issued_at, "
               "expires_at, left_setting, right_setting, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [issued.token, run, voter, left_key, right_key, issued.left_image, issued.right_image, now,
                now + timedelta(seconds=config.expires_seconds), left_setting, right_setting, session])
    return issued


def issued_image(db, image_token: str, images_root: Path, voter: str, session: str = "") -> Path | None:
    """The image file behind an opaque image id of `voter`'s open pair issued to `session`, else None."""
    row = db.execute(
        "SELECT s.image_path FROM vote_pairs v JOIN samples s ON s.key = CASE WHEN v.left_image = ? THEN v.left_key "
        "ELSE v.right_key END WHERE (v.left_image = ? OR v.right_image = ?) AND v.expires_at > ? "
        "AND v.voter = ? AND v.session IS NOT DISTINCT FROM ? AND v.skipped_at IS NULL "
        "AND v.token NOT IN (SELECT token FROM votes)",
        [image_token, image_token, image_token, _now(), voter, session]).fetchone()
    return Path(images_root) / row[0] if row else None


def record_vote(db, token: str, voter: str, answer: str, session: str = "") -> CastVote:
    """Store `voter`'s answer (from `session`) to the pair `token` once; refuses anything else with VoteRefused."""
    import duckdb

    if answer not in ANSWERS:
        raise VoteRefused(f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
    row = db.execute(
        "SELECT v.run, v.voter, v.expires_at, wl.checkpoint, wr.checkpoint, g.prompt_id, wl.seed, wl.cfg, "
        "v.left_setting, v.right_setting, v.session, v.skipped_at "
        "FROM vote_pairs v JOIN work wl ON wl.key = v.left_key JOIN work wr ON wr.key = v.right_key "
        "JOIN grid_cells g ON g.key = v.left_key AND g.run = v.run WHERE v.token = ? LIMIT 1", [token]).fetchone()
    if row is None:
        raise VoteRefused("no such pair was issued")
    run, issued_to, expires_at, left, right, prompt_id, seed, cfg, left_setting, right_setting, issued_session, \
        skipped_at = row
    if issued_to != voter:
        raise VoteRefused("this pair was issued to another voter")
    if db.execute("SELECT count(*) FROM votes WHERE token = ?", [token]).fetchone()[0]:
        raise VoteRefused("this pair has already been answered")
    if (issued_session or "") != session:
        raise VoteRefused("this pair was issued to another login of yours; answer it there or ask for a new one")
    if skipped_at is not None:
        raise VoteRefused("this pair was skipped: a newer one was asked for")
    if expires_at <= _now():
        raise VoteRefused("this pair has expired; ask for a new one")
    try:
        db.execute("INSERT INTO votes (token, run, voter, left_checkpoint, right_checkpoint, prompt_id, seed, cfg, "
                   "answer, voted_at, left_setting, right_setting) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [token, run, voter, left, right, prompt_id, seed, cfg, answer, _now(), left_setting,
                    right_setting])
    except (duckdb.ConstraintException, duckdb.TransactionException):
        raise VoteRefused("this pair has already been answered") from None
    names = dict(db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())  # bases and stacks too
    where = ("", "")
    if left_setting and right_setting and left_setting != right_setting:
        pair = (Setting.from_key(left_setting), Setting.from_key(right_setting))
        axes = varying_axes(pair)
        where = tuple(s.label(axes, names) for s in pair)
    winner = {"A": names[left], "B": names[right]}.get(answer)
    return CastVote(names[left], names[right], answer, winner, *where)
