"""The report as Markdown, short enough for a pull-request comment: the recommendation's summary (its sentences
folded away), release decision, leaderboard, flags."""

from __future__ import annotations

from .model import CheckpointRow, Report
from .portability import portability_markdown
from .summary import recommendation_summary

SERIES_TITLES = {"overall": "Recommended", "raw": "Among raw weights only", "ema": "Among EMA weights only"}


def fmt(value: float | None) -> str:
    """Four significant digits; rounding noise around zero (such as the base against itself) shows as 0."""
    if value is None:
        return "–"
    return "0" if abs(value) < 1e-12 else f"{value:.4g}"


def interval(mean: float, low: float | None, high: float | None, std: float | None = None) -> str:
    """`mean [low, high]`, or `mean ± std` when there is no interval."""
    if low is not None and high is not None:
        return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return f"{fmt(mean)} ± {fmt(std)}" if std is not None else fmt(mean)


def weights(row: CheckpointRow) -> str:
    return "base" if row.info.role == "base" else ("EMA" if row.info.ema else "raw")


def metric_cell(row: CheckpointRow, metric: str) -> str:
    if metric in row.metrics:
        e = row.metrics[metric]
        return interval(e.mean, e.ci_low, e.ci_high)
    if metric in row.set_metrics:
        v = row.set_metrics[metric]
        return interval(v.mean, v.ci_low, v.ci_high, v.std)
    return "–"


def pick(rec) -> str:
    if rec.checkpoint is None:
        return "none (every candidate is flagged)"
    epoch = "no epoch" if rec.epoch is None else f"epoch {rec.epoch}"
    return f"**{_escape(rec.checkpoint)}** ({epoch}, {'EMA' if rec.ema else 'raw'}, {_escape(rec.where or '')})"


def summary_markdown(report: Report) -> list[str]:
    """The recommendation's summary as three Markdown lines (hard line breaks), the checkpoint in bold."""
    s = recommendation_summary(report)
    first = f"Recommended: {'none' if s.checkpoint is None else f'**{_escape(s.checkpoint)}**'} {_escape(s.what)}"
    return [first + "  ", _escape(s.setting) + "  ", f"Why: {_escape(s.why)}"]


def reasons_markdown(report: Report) -> list[str]:
    """The recommendation's sentences, one bullet each, and the raw-only and EMA-only picks when both exist."""
    lines = [f"- {_escape(reason)}" for reason in report.recommendations["overall"].reasons]
    return lines + [f"- {SERIES_TITLES[s]}: {pick(report.recommendations[s])}" for s in ("raw", "ema")
                    if s in report.recommendations]


def goal_markdown(report: Report) -> list[str]:
    """The goal, its constraints and each candidate per criterion (nothing without a goal)."""
    from .goal_section import constraint_lines, criteria_table

    lines = constraint_lines(report)
    if not lines:
        return []
    out = ["### Goal", "", _escape(lines[0]), "", "Constraints (a flagged checkpoint is never recommended):", ""]
    out += [f"- {_escape(line)}" for line in lines[1:]] + [""]
    header, rows = criteria_table(report)
    if rows:
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
        confidence = f"{report.config.bootstrap.confidence:.0%}"
        out += ["", f"Each criterion: mean (paired difference to that criterion's best, {confidence} CI); ✓ ties the "
                    "best.", ""]
    return out


def metric_header(report: Report, metric: str) -> str:
    info = report.metric(metric)
    arrow = "↑" if info.higher_is_better else "↓"
    return f"{metric} {arrow}" + (f" ({info.prompts})" if info.prompts else "")


def flags(report: Report) -> list[str]:
    """One line per excluded checkpoint (memorisation, overcooking), from the overall recommendation."""
    return [f"{v.name} ({v.where}): {v.reason}" for v in report.recommendations["overall"].verdicts
            if v.status == "excluded"]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


NO_DECISION = "No release candidate has been marked for this run yet (the app's Decide tab marks one)."


def decision_text(decision) -> tuple[str, str]:
    """(checkpoint, "marked by <who> on <when> UTC: <why>") of a release decision, on one line."""
    when = decision.decided_at.strftime("%Y-%m-%d %H:%M")
    reason = " ".join(decision.reason.split())
    despite = f" (confirmed despite: {' '.join(decision.overrides.split())})" if decision.overrides else ""
    return decision.checkpoint, f"marked by {decision.decided_by} on {when} UTC: {reason}{despite}"


def decision_note(report: Report) -> str | None:
    """A sentence when the latest decision is not the checkpoint the metrics recommend, else None."""
    recommended = report.recommendations["overall"].checkpoint
    if not report.decisions or report.decisions[0].checkpoint == recommended:
        return None
    return (f"The release candidate differs from the checkpoint recommended by {report.config.primary} "
            f"({recommended or 'none'}).")


def _decision_lines(report: Report) -> list[str]:
    if not report.decisions:
        return [NO_DECISION]
    checkpoint, text = decision_text(report.decisions[0])
    lines = [f"**Release candidate: {_escape(checkpoint)}**, {_escape(text)}"]
    note = decision_note(report)
    if note:
        lines += ["", note]
    if len(report.decisions) > 1:
        lines += ["", "Earlier decisions:", ""]
        lines += [f"- {_escape(c)}, {_escape(t)}" for c, t in map(decision_text, report.decisions[1:])]
    return lines


def render_markdown(report: Report) -> str:
    c = report.config
    recommended = report.recommendations["overall"].checkpoint
    lines = [f"## evalsvc report: run `{report.run}`", ""]
    lines += summary_markdown(report) + [""]
    lines += ["<details><summary>details</summary>", ""] + reasons_markdown(report) + ["", "</details>", ""]
    lines += goal_markdown(report)
    lines += ["### Release decision", ""] + _decision_lines(report) + [""]
    names = [m.name for m in report.metrics]
    lines += ["### Leaderboard", "",
              "| checkpoint | epoch | weights | setting | " + " | ".join(metric_header(report, m) for m in names) + " |",
              "|---|---:|---|---:|" + "---:|" * len(names)]
    for row in report.rows:
        name = _escape(row.info.file_name)
        name = f"**{name}** ⭐" if row.info.file_name == recommended else name
        epoch = "–" if row.info.epoch is None else str(row.info.epoch)
        cells = [name, epoch, weights(row), _escape(report.where(row.setting, row.info))] + [metric_cell(row, m) for m in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "⭐ recommended. ↑ higher is better, ↓ lower is better; a prompt role in brackets "
                  "(target, holdout) marks a metric judged on those prompts only.", "", "### Flags", ""]
    lines += [f"- {_escape(line)}" for line in flags(report)] or [
        "- No checkpoint is flagged (" + ("undertrained, overcooked, memorised, overfit, polluting"
                                          if c.goal else "memorisation, overcooking") + ")."]
    for matrix in report.portability:
        lines += ["", f"### Portability: checkpoint x {matrix.axis}", ""] + portability_markdown(matrix, c.primary)
    lines += ["", "### Notes", ""] + [f"- {note}" for note in report.notes()]
    return "\n".join(lines) + "\n"
