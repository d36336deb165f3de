"""The Decide tab's evidence: the run's candidates with the recommendation first, and why marking one other
than it needs a confirmation (it is flagged, significantly worse than the best, or has no scores)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from ..stats.recommend import Verdict


@dataclass(frozen=True)
class DecideView:
    candidates: tuple[str, ...]  # every candidate checkpoint's file name, the recommended one first
    recommended: str | None
    primary: str
    verdicts: dict[str, Verdict]  # by file name, at the setting each is judged at (none without scores)
    policy: str  # how the settings were chosen, in words

    def warnings(self, checkpoint: str) -> list[str]:
        """Why marking `checkpoint` needs a confirmation, in sentences ([] when it does not)."""
        verdict = self.verdicts.get(checkpoint)
        if verdict is None:
            return [f"{checkpoint} has no {self.primary} scores, so nothing backs this choice"]
        if verdict.status == "excluded":
            return [f"{checkpoint} is flagged: {verdict.reason}"]
        if verdict.status == "worse":
            return [f"{checkpoint} is significantly worse than the best: {verdict.reason}"]
        return []

    def evidence(self, checkpoint: str) -> str:
        """The checkpoint's verdict and score at its setting, as Markdown."""
        verdict = self.verdicts.get(checkpoint)
        if verdict is None:
            return f"{escape(checkpoint)}: no {self.primary} scores."
        m = verdict.mean
        lines = [f"**{escape(checkpoint)}**: {verdict.status}, judged {escape(self.policy)}, at "
                 f"{escape(verdict.where)}.",
                 f"- {self.primary}: {m.mean:.4g} (95% CI {m.ci_low:.4g} to {m.ci_high:.4g})"]
        if verdict.difference is not None:
            d = verdict.difference
            lines.append(f"- against the best: {d.mean:+.4g} (95% CI {d.ci_low:+.4g} to {d.ci_high:+.4g})")
        lines.append(f"- {escape(verdict.reason)}")
        return "\n".join(lines)


def run_candidates(db, run: str) -> tuple[str, ...]:
    """The file names of `run`'s candidate checkpoints, by epoch."""
    return tuple(n for n, in db.execute(
        "SELECT c.file_name FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 WHERE rc.run = ? "
        "AND rc.role = 'candidate' ORDER BY c.epoch NULLS LAST, c.ema, c.file_name", [run]).fetchall())


def decide_view(store, run: str) -> DecideView:
    """The evidence of `run` for the Decide tab (the run's report; candidates without scores listed last)."""
    from ..errors import InputError
    from .curves import gather_curves

    names = run_candidates(store.db, run)
    if not names:
        raise InputError(f"run {run!r} has no candidate checkpoints")
    try:
        report = gather_curves(store, run).report
    except InputError:  # nothing scored yet: every choice needs a confirmation
        return DecideView(tuple(names), None, "clip_t", {}, "")
    overall = report.recommendations["overall"]
    first = [overall.checkpoint] if overall.checkpoint in names else []
    return DecideView(tuple(first + [n for n in names if n not in first]), overall.checkpoint,
                      report.config.primary, {v.name: v for v in overall.verdicts}, report.config.judge.describe())
