"""The human leaderboard of a run: Bradley–Terry ratings from its blind votes, and how well each automatic
metric predicts those votes.

Agreement of a metric: over the decisive votes (A or B), the share where the metric, on the two images the
voter saw, prefers the same one (by `higher_is_better`); votes where the metric has no value for either image
or scores them equal are left out. The interval is Wilson's score interval at 95%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..scoring.registry import scorer_registry
from ..stats import BootstrapConfig
from ..stats.bradley_terry import Comparison, Leaderboard, leaderboard
from ..votes import run_comparisons


@dataclass(frozen=True)
class MetricAgreement:
    metric: str
    agree: int
    votes: int
    ci_low: float
    ci_high: float

    @property
    def share(self) -> float:
        return self.agree / self.votes if self.votes else math.nan


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def voted_settings(db, run: str) -> list[str]:
    """The setting keys of the run's checkpoint-pair votes, most votes first."""
    return [k for k, _ in db.execute(
        "SELECT left_setting, count(*) FROM votes WHERE run = ? AND left_setting = right_setting "
        "AND left_checkpoint <> right_checkpoint GROUP BY left_setting ORDER BY 2 DESC, 1", [run]).fetchall()]


def human_leaderboard(db, run: str, setting: str | None = None,
                      config: BootstrapConfig = BootstrapConfig(resamples=300)) -> Leaderboard:
    """Ratings by checkpoint file name of every candidate of `run`, voted on or not, from the votes at one setting
    (a setting key; default: the setting with the most votes). Votes at different settings are never pooled."""
    names = dict(db.execute("SELECT c.sha256, c.file_name FROM run_checkpoints rc JOIN checkpoints c "
                            "ON c.sha256 = rc.sha256 WHERE rc.run = ? AND rc.role = 'candidate' ORDER BY c.file_name",
                            [run]).fetchall())
    if setting is None:
        voted = voted_settings(db, run)
        setting = voted[0] if voted else None
    comparisons = [Comparison(names[c.a], names[c.b], c.outcome)
                   for c in (run_comparisons(db, run, setting) if setting is not None else [])
                   if c.a in names and c.b in names]
    return leaderboard(list(names.values()), comparisons, config)


def metric_agreement(db, run: str) -> list[MetricAgreement]:
    """Each stored image-level metric's agreement with the run's decisive votes."""
    registry = scorer_registry()
    rows = db.execute(
        "SELECT v.answer, s.metric, sl.value, s.value FROM votes v JOIN vote_pairs p ON p.token = v.token "
        "JOIN scores sl ON sl.key = p.left_key JOIN scores s ON s.key = p.right_key AND s.metric = sl.metric "
        "WHERE v.run = ? AND v.answer IN ('A', 'B') AND sl.value IS NOT NULL AND s.value IS NOT NULL",
        [run]).fetchall()
    tally: dict[str, list[int]] = {}
    for answer, metric, left, right in rows:
        if metric not in registry or left == right:
            continue
        prefers_left = (left > right) == registry[metric].higher_is_better
        counts = tally.setdefault(metric, [0, 0])
        counts[0] += prefers_left == (answer == "A")
        counts[1] += 1
    out = []
    for metric in registry:
        if metric in tally:
            agree, votes = tally[metric]
            out.append(MetricAgreement(metric, agree, votes, *wilson_interval(agree, votes)))
    return sorted(out, key=lambda m: -m.share)
