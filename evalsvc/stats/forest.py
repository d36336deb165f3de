"""A recommendation as forest-plot rows: each candidate's paired difference to the best with its interval.

Differences are oriented so that positive favours the candidate (as in `stats.recommend`); the best sits at 0.
Excluded candidates have no paired difference: their row carries the difference of the means instead, without
an interval (with the same (prompt, seed) cells that is the paired difference's point estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

from .flag import Flag
from .recommend import Recommendation


@dataclass(frozen=True)
class ForestRow:
    """One candidate: `status` as in the verdict, `best` for the best mean; `ci_low`/`ci_high` None when excluded."""

    name: str
    where: str
    status: str
    best: bool
    difference: float
    ci_low: float | None
    ci_high: float | None
    reason: str
    flags: tuple[Flag, ...] = ()


def forest_rows(recommendation: Recommendation, higher_is_better: bool) -> tuple[ForestRow, ...]:
    """The rows, best first, then by difference (the most favourable first), excluded candidates last."""
    sign = 1.0 if higher_is_better else -1.0
    best = next((v for v in recommendation.verdicts if v.name == recommendation.best
                 and v.setting == recommendation.best_setting), None)
    rows = []
    for v in recommendation.verdicts:
        is_best = v is best
        if is_best:
            rows.append(ForestRow(v.name, v.where, v.status, True, 0.0, 0.0, 0.0, v.reason, v.flags))
        elif v.difference is not None:
            d = v.difference
            rows.append(ForestRow(v.name, v.where, v.status, False, d.mean, d.ci_low, d.ci_high, v.reason, v.flags))
        else:
            gap = sign * (v.mean.mean - best.mean.mean) if best is not None else 0.0
            rows.append(ForestRow(v.name, v.where, v.status, False, gap, None, None, v.reason, v.flags))
    return tuple(sorted(rows, key=lambda r: (not r.best, r.ci_low is None, -r.difference)))


def flag_names(row: ForestRow) -> list[str]:
    """The names of the flags that excluded a candidate; ["flagged"] when it carries none."""
    return [flag.name for flag in row.flags] or ["flagged"]
