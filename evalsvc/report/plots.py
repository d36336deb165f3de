"""Each metric against the epoch, and the recommendation as a forest plot, as inline SVG for the HTML report.

Raw and EMA weights of the run's main training series are separate lines with interval bands, the base
a dashed reference line, checkpoints of other training series (say, a variant trained beside it) dotted
reference lines, the recommended checkpoint a star; the primary metric's plot has the training loss on its own small
axes beside it (one curve: raw and EMA files come from the same training run). Titles sit above the figure and
legends below it, so neither is clipped nor narrows the plot. The forest plot shows the recommendation: each
candidate's paired difference to the best. Figures use matplotlib's object API,
never pyplot's global state; SVG text stays text, and ids are prefixed per figure so that many plots
can share one page.
"""

from __future__ import annotations

import io
import re
from collections import Counter

from .model import Report
from .summary import short

SERIES = ((False, "raw", "#1f6fb4"), (True, "EMA", "#d2452a"))
BASE_COLOUR = "#555555"
OTHER_COLOURS = ("#8e44ad", "#b8860b", "#16a085", "#7f8c8d")
LEGEND_COLUMNS = 4  # the legend below a plot, in at most this many columns
LEGEND_FONT = 8  # points
LOSS_COLOUR = "#4d8f52"


def metric_value(row, metric: str):
    """(mean, low, high) of a row's metric (low/high None without an interval), or None."""
    if metric in row.metrics:
        e = row.metrics[metric]
        return e.mean, e.ci_low, e.ci_high
    if metric in row.set_metrics:
        v = row.set_metrics[metric]
        return v.mean, v.ci_low, v.ci_high
    return None


def loss_positions(report: Report) -> tuple[list[float], list[float]]:
    """The loss at fractional epochs: the last step of epoch e sits at e, where its checkpoint was saved."""
    per_epoch: dict[int, list] = {}
    for point in report.loss:
        per_epoch.setdefault(point.epoch, []).append(point)
    xs, ys = [], []
    for epoch, points in sorted(per_epoch.items()):
        for i, point in enumerate(points):
            xs.append(epoch - 1 + (i + 1) / len(points))
            ys.append(point.loss)
    return xs, ys


def _smoothed(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def main_series(report: Report) -> str | None:
    """The training series with the most candidate checkpoints: the one drawn as lines against the epoch."""
    counts = Counter(r.info.series for r in report.rows if r.info.role == "candidate")
    return counts.most_common(1)[0][0] if counts else None


def metric_figure(report: Report, metric: str):
    """The plot of one metric against the epoch (a matplotlib Figure): the title above, the legend in a few
    columns below, and for the primary metric the training loss on its own small axes to the right."""
    from matplotlib.figure import Figure

    info = report.metric(metric)
    with_loss = metric == report.config.primary and bool(report.loss)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    if with_loss:
        ax, loss_ax = fig.subplots(1, 2, width_ratios=(3, 1))
    else:
        ax, loss_ax = fig.add_subplot(), None
    _metric_lines(ax, report, metric)
    ax.set_ylabel(metric)
    _epoch_axis(ax)
    prompts = f"{info.prompts} prompts" if info.prompts else "all prompts"
    fig.suptitle(f"{metric} ({'higher' if info.higher_is_better else 'lower'} is better; {prompts})", fontsize=10)
    handles, labels = _merged_bands(*ax.get_legend_handles_labels(), report.config.bootstrap.confidence)
    if loss_ax is not None:
        _loss_plot(loss_ax, report)
        more = loss_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    fig.legend(handles, labels, loc="outside lower center", ncols=legend_columns(labels, fig.get_figwidth()),
               fontsize=LEGEND_FONT, frameon=False, handlelength=1.6, columnspacing=1.2)
    return fig


def _merged_bands(handles, labels, confidence: float):
    """One legend entry for each line and its interval band ("raw" and "raw 95% CI" -> "raw, 95% CI")."""
    suffix = f" {100 * confidence:g}% CI"
    index = {label: i for i, label in enumerate(labels)}
    out_handles, out_labels = [], []
    for handle, label in zip(handles, labels):
        if label.endswith(suffix) and label.removesuffix(suffix) in index:
            continue
        if label + suffix in index:
            handle, label = (handles[index[label + suffix]], handle), f"{label},{suffix}"
        out_handles.append(handle)
        out_labels.append(label)
    return out_handles, out_labels


def legend_columns(labels: list[str], width_in: float) -> int:
    """How many legend columns fit across `width_in` inches: at most LEGEND_COLUMNS, fewer for long labels
    (a label's width estimated from its characters, plus its line sample and the column gap)."""
    widest = max((len(label) for label in labels), default=1) * 0.55 * LEGEND_FONT + 3.2 * LEGEND_FONT  # points
    return max(1, min(LEGEND_COLUMNS, len(labels), int(0.95 * width_in * 72 // widest)))


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _metric_lines(ax, report: Report, metric: str) -> None:
    """Raw and EMA lines with bands, other series and the base as reference lines, the recommendation a star."""
    main = main_series(report)
    for ema, label, colour in SERIES:
        points = sorted((r.info.epoch, *v) for r in report.rows if r.info.role == "candidate" and r.info.ema == ema
                        and r.info.series == main and r.info.epoch is not None
                        and (v := metric_value(r, metric)) is not None)
        if not points:
            continue
        xs, means = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, means, marker="o", markersize=4, color=colour, label=label, zorder=3)
        banded = [p for p in points if p[2] is not None]
        if len(banded) >= 2:
            ax.fill_between([p[0] for p in banded], [p[2] for p in banded], [p[3] for p in banded], color=colour,
                            alpha=0.18, linewidth=0, label=f"{label} {100 * report.config.bootstrap.confidence:g}% CI")
        elif banded:
            x, mean, low, high = banded[0]
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color=colour, capsize=3)
    others = iter(OTHER_COLOURS * len(report.rows))
    bases = [r for r in report.rows if r.info.role == "base"]
    base_styles = iter(["--", "-.", (0, (5, 1, 1, 1))] * len(report.rows))
    for row in report.rows:
        value = metric_value(row, metric)
        if row.info.role == "candidate" and row.info.series != main and value is not None:
            ax.axhline(value[0], color=next(others), linestyle=":", linewidth=1.5, label=short(row.info.file_name),
                       zorder=2)
        if row.info.role == "base" and value is not None:
            ax.axhline(value[0], color=BASE_COLOUR, linestyle=next(base_styles), linewidth=1.2, zorder=2,
                       label="base" if len(bases) == 1 else f"base {row.info.file_name}")
            if value[1] is not None:
                ax.axhspan(value[1], value[2], color=BASE_COLOUR, alpha=0.07, linewidth=0)
        if (row.info.file_name == report.recommendations["overall"].checkpoint and value is not None
                and row.info.epoch is not None):
            ax.plot([row.info.epoch], [value[0]], marker="*", markersize=15, color="#f2c12e",
                    markeredgecolor="black", linestyle="none", label="recommended", zorder=4)


def _loss_plot(ax, report: Report) -> None:
    """The training loss against the (fractional) epoch, smoothed when it has many steps."""
    xs, ys = loss_positions(report)
    window = max(1, len(ys) // 40)
    if window > 1:
        ax.plot(xs, ys, color=LOSS_COLOUR, linewidth=0.6, alpha=0.35)
    ax.plot(xs, _smoothed(ys, window), color=LOSS_COLOUR, linewidth=1.2,
            label="training loss" + (f" (mean of {window} steps)" if window > 1 else ""))
    ax.set_title("training loss", fontsize=9)
    ax.tick_params(labelsize=8)
    _epoch_axis(ax)


STATUS_STYLES = {  # status -> (marker, colour)
    "recommended": ("*", "#d29a00"), "tied": ("o", "#1f6fb4"), "worse": ("o", "#b03a2e"),
    "excluded": ("x", "#888888")}


def _status_label(row) -> str:
    from ..stats.forest import flag_names

    if row.best:
        return "best, recommended" if row.status == "recommended" else "best"
    return f"excluded: {', '.join(flag_names(row))}" if row.status == "excluded" else row.status


def forest_figure(report: Report, series: str = "overall"):
    """Each candidate's paired difference in the primary metric to the best, with its interval: one row per
    candidate (the best at 0, excluded ones grey crosses without an interval), a zero line, the status on the
    right."""
    from matplotlib.figure import Figure

    from ..stats.forest import forest_rows

    rec = report.recommendations[series]
    primary = report.config.primary
    rows = forest_rows(rec, report.metric(primary).higher_is_better)
    fig = Figure(figsize=(6.4, 1.2 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ax.axvline(0, color=BASE_COLOUR, linewidth=1, linestyle="--", zorder=1)
    for y, row in enumerate(rows):
        marker, colour = STATUS_STYLES.get(row.status, ("o", BASE_COLOUR))
        if row.ci_low is not None:
            ax.plot([row.ci_low, row.ci_high], [y, y], color=colour, linewidth=2, solid_capstyle="butt", zorder=2)
        ax.plot([row.difference], [y], marker=marker, markersize=12 if marker == "*" else 6, color=colour,
                linestyle="none", zorder=3)
    several = len({r.where for r in rows}) > 1  # name the setting only when the candidates differ in it
    ax.set_yticks(range(len(rows)), [f"{short(r.name)} ({r.where})" if several and r.where else short(r.name)
                                     for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    status = ax.secondary_yaxis("right")
    status.set_yticks(range(len(rows)), [_status_label(r) for r in rows], fontsize=8)
    status.tick_params(length=0)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    pct = f"{100 * report.config.bootstrap.confidence:g}%"
    ax.set_xlabel(f"paired difference in {primary} to the best (positive: better), {pct} CI", fontsize=8)
    fig.suptitle(f"{primary}: each candidate against the best, {short(rec.best) if rec.best else 'none'}",
                 fontsize=10)
    return fig


def figure_svg(fig, prefix: str) -> str:
    """The figure as an `<svg>` element for an HTML page: no XML prolog, metadata or namespace URLs, and every
    id prefixed with `prefix` (with its references)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    return re.sub(r'(\bid="|#)([\w.-]+)', lambda m: m.group(1) + (f"{prefix}-{m.group(2)}" if m.group(2) in ids
                                                                    else m.group(2)), svg)


def report_figures(report: Report) -> list[tuple[str, object]]:
    """(metric, Figure) for every metric of the report, the primary first."""
    names = [m.name for m in report.metrics]
    names.sort(key=lambda name: name != report.config.primary)
    return [(name, metric_figure(report, name)) for name in names]
