"""A run's curves: the recommendation (summary, forest plot, the sentences behind it), the latest release decision,
and each metric against the epoch with its intervals and the training loss (the report's plots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from ..decisions import Decision, decisions
from ..report.model import Report, ReportConfig, gather_report
from ..stats import BootstrapConfig


@dataclass(frozen=True)
class CurvesConfig:
    """What the curves rank by; `primary` falls back to the run's first stored metric when it has none of it."""

    primary: str = "clip_t"
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass(frozen=True)
class Curves:
    report: Report
    decision: Decision | None  # the latest release decision, if any


def gather_curves(store, run: str, config: CurvesConfig = CurvesConfig()) -> Curves:
    """The report of `run` (without image strips) and its latest release decision; InputError when it has no
    usable scores."""
    from ..goals import run_goal
    from .view import primary_metric

    primary = primary_metric(store, run, config.primary) or config.primary
    goal = run_goal(store.db, run)  # a suite that says what the LoRA is for: judged on that goal
    report = gather_report(store, run, ReportConfig(primary=primary, strip_images=0, bootstrap=config.bootstrap,
                                                    goal=goal))
    latest = decisions(store.db, run)
    return Curves(report, latest[0] if latest else None)


def recommendation_markdown(report: Report) -> str:
    """The recommendation's summary in three lines: what, at which setting, why."""
    from ..report.markdown import summary_markdown

    return "\n".join(summary_markdown(report))


def details_markdown(report: Report) -> str:
    """The sentences behind the summary, one bullet each, and the raw-only and EMA-only picks when both exist."""
    from ..report.markdown import reasons_markdown

    return "\n".join(reasons_markdown(report))


def forest_html(report: Report) -> str:
    """The recommendation's forest plot (each candidate against the best) as inline SVG."""
    from ..report.plots import figure_svg, forest_figure

    return f'<figure class="evs-forest">{figure_svg(forest_figure(report), "forest")}</figure>'


def decision_markdown(decision: Decision | None) -> str:
    if decision is None:
        return "No release decision yet (mark one in the Decide tab)."
    return (f"**Release candidate:** {decision.checkpoint}, chosen by {decision.decided_by} on "
            f"{decision.decided_at:%Y-%m-%d %H:%M} UTC: {decision.reason}")


def curves_html(report: Report) -> str:
    """Every metric's plot against the epoch (the primary first, with the loss) as inline SVG."""
    from ..report.plots import figure_svg, report_figures

    return "".join(f'<figure class="evs-curve" data-metric="{escape(name)}">{figure_svg(fig, f"curve-{i}")}</figure>'
                   for i, (name, fig) in enumerate(report_figures(report)))


def portability_section(report: Report) -> str:
    """The report's portability heat maps (checkpoint x base, x stack), when the run has several."""
    from ..report.portability import portability_html

    return "".join(f'<div class="evs-portability-wrap"><h3>Portability: checkpoint x {escape(m.axis)}</h3>'
                   f"{portability_html(m, report.config.primary)}</div>" for m in report.portability)
