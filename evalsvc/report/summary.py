"""The recommendation in three short lines (what, at which setting, why in one sentence), shared by the HTML and
Markdown reports and the app's Curves tab; the full sentences behind it are the recommendation's reasons."""

from __future__ import annotations

from dataclasses import dataclass

from ..stats.forest import ForestRow, flag_names, forest_rows
from .model import Report

NAMED = 3  # candidates named in a list before "and N more"


@dataclass(frozen=True)
class Summary:
    """`checkpoint` (None: nothing can be recommended), then `what` after it, `setting` and `why` as plain text."""

    checkpoint: str | None
    what: str
    setting: str
    why: str


def recommendation_summary(report: Report, series: str = "overall") -> Summary:
    """The summary of one of the report's recommendations."""
    c = report.config
    rec = report.recommendations[series]
    by = f"by {c.primary} on {c.prompt_role} prompts"
    if rec.checkpoint is None:
        return Summary(None, by, f"Judged {c.judge.describe()} (--judge {c.judge.text}).",
                       f"Every candidate is flagged: {_excluded(forest_rows(rec, True))}.")
    epoch = "no epoch" if rec.epoch is None else f"epoch {rec.epoch}"
    what = f"({epoch}, {'EMA' if rec.ema else 'raw'}) {by}"
    setting = f"At {rec.where or 'its setting'}: {c.judge.describe()} (--judge {c.judge.text})."
    return Summary(rec.checkpoint, what, setting, _why(report, series))


def _why(report: Report, series: str) -> str:
    rec = report.recommendations[series]
    rows = forest_rows(rec, report.metric(report.config.primary).higher_is_better)
    pct = f"{100 * report.config.bootstrap.confidence:g}%"
    chosen = next(r for r in rows if r.status == "recommended")
    if chosen.best:
        earlier_worse = any(v.status == "worse" and v.epoch is not None and (rec.epoch is None or v.epoch < rec.epoch)
                            for v in rec.verdicts)
        parts = [f"best mean {report.config.primary}" + ("; every earlier candidate is significantly worse"
                                                         if earlier_worse else "")]
    else:
        parts = [f"the earliest within the {pct} CI of the best, {short(rec.best)}"]
    tied = [v.name for v in rec.verdicts if v.status == "tied" and v.name != rec.best]  # by epoch
    if tied:
        parts.append(f"also within it: {_names(tied)}")
    worse = sum(r.status == "worse" for r in rows)
    if worse:
        parts.append(f"{worse} significantly worse")
    if any(r.status == "excluded" for r in rows):
        parts.append(f"excluded: {_excluded(rows)}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def short(name: str) -> str:
    """A checkpoint's file name without its extension."""
    return name.removesuffix(".safetensors").removesuffix(".ckpt").removesuffix(".pt")


def _names(names: list[str]) -> str:
    shown = [short(n) for n in names[:NAMED]]
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def _excluded(rows: tuple[ForestRow, ...]) -> str:
    """`name (flag)` of each excluded candidate, each flag by its name only (the text before its colon)."""
    items = [f"{short(r.name)} ({', '.join(flag_names(r))})" for r in rows if r.status == "excluded"]
    return ", ".join(items[:NAMED]) + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")

