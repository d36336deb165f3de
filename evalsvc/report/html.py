"""The report as one self-contained, offline HTML file: no external URL, script or font; plots are inline
SVG and the image strips base64 PNG data URIs."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from .markdown import (NO_DECISION, SERIES_TITLES, decision_note, decision_text, flags, metric_cell, metric_header,
                       pick, weights)
from .model import Report
from .portability import portability_html
from .summary import recommendation_summary

THUMBNAIL = 192  # longest side of an embedded image, in pixels; larger images are downscaled
SHOWN = 128  # displayed width of an image, in CSS pixels

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.recommendation { background: #f4f8ff; border: 1px solid #c9d8f0; border-radius: 6px; padding: 0.6em 1em; }
.recommendation p { margin: 0; line-height: 1.5; } details li, .notes li { margin: 0.25em 0; }
figure.forest { margin: 0.8em 0; max-width: 640px; } figure.forest svg { width: 100%; height: auto; }
details > summary { cursor: pointer; color: #335; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { padding: 0.3em 0.6em; border: 1px solid #ddd; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; } tr.recommended td { background: #fff7d6; font-weight: 600; }
.evs-portability td.evs-heat { text-align: center; min-width: 9em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots figure { margin: 0; flex: 1 1 520px; max-width: 640px; }
.plots svg { width: 100%; height: auto; }
figcaption { font-size: 0.8em; color: #555; }
.strip { display: flex; gap: 0.6em; flex-wrap: wrap; }
.strip figure { margin: 0; width: 128px; }
.strip img { width: 128px; height: auto; border: 1px solid #ccc; }
.strip img.upscaled { image-rendering: pixelated; }
.flags { color: #8a3b00; }
.decision { background: #f2fbf2; border: 1px solid #bfe0bf; border-radius: 6px; padding: 0.6em 1em; }
"""


def image_data_uri(path: Path, max_side: int = THUMBNAIL) -> tuple[str, bool]:
    """(a PNG data URI of the image, downscaled so that its longest side is at most `max_side`; whether it is
    smaller than it is shown, so the page should upscale it without smoothing)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        width = image.width
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), width < SHOWN


def _summary(report: Report) -> str:
    """The recommendation's three-line summary."""
    s = recommendation_summary(report)
    chosen = "none" if s.checkpoint is None else f"<strong>{escape(s.checkpoint)}</strong>"
    return (f'<div class="recommendation"><p>Recommended: {chosen} {escape(s.what)}<br>{escape(s.setting)}<br>'
            f"Why: {escape(s.why)}</p></div>")


def _recommendations(report: Report) -> str:
    """The summary, the forest plot of every candidate against the best, the sentences behind them in a fold,
    and the flags."""
    from .plots import figure_svg, forest_figure

    c = report.config
    parts = [_summary(report), f'<figure class="forest">{figure_svg(forest_figure(report), "forest")}</figure>',
             "<details><summary>details</summary>"]
    for series, title in SERIES_TITLES.items():
        rec = report.recommendations.get(series)
        if rec is None:
            continue
        chosen = escape(pick(rec).replace("**", ""))
        parts.append(f"<p><strong>{title}</strong> by {escape(c.primary)} on {escape(c.prompt_role)} prompts, judged "
                     f"{escape(c.judge.describe())} (--judge {escape(c.judge.text)}): "
                     f"<strong>{chosen}</strong></p>")
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in rec.reasons) + "</ul>")
    parts.append("</details>")
    parts.append(_goal(report))
    lines = flags(report)
    parts.append("<h2>Flags</h2>")
    parts.append('<ul class="flags">' + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>" if lines else
                 "<p>No checkpoint is flagged (" + ("undertrained, overcooked, memorised, overfit, polluting"
                                                   if c.goal else "memorisation, overcooking") + ").</p>")
    return "\n".join(parts)


def _goal(report: Report) -> str:
    """The goal, its constraints and the criteria table (empty without a goal)."""
    from .goal_section import constraint_lines, criteria_table

    lines = constraint_lines(report)
    if not lines:
        return ""
    parts = ["<h2>Goal</h2>", f"<p>{escape(lines[0])}</p>", "<p>Constraints (a flagged checkpoint is never "
             "recommended):</p>", "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines[1:]) + "</ul>"]
    header, rows = criteria_table(report)
    if rows:
        parts.append('<table class="criteria"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in header) +
                     "</tr></thead><tbody>" + "".join(
                         f'<tr class="{escape(row[1])}">' + "".join(f"<td>{escape(cell)}</td>" for cell in row) +
                         "</tr>" for row in rows) + "</tbody></table>")
        confidence = f"{report.config.bootstrap.confidence:.0%}"
        parts.append(f"<p>Each criterion: mean (paired difference to that criterion's best, {confidence} CI); "
                     "✓ ties the best.</p>")
    return "\n".join(parts)


def _decision(report: Report) -> str:
    """The latest release decision with who, when and why; earlier ones listed below it."""
    if not report.decisions:
        return f"<p>{escape(NO_DECISION)}</p>"
    checkpoint, text = decision_text(report.decisions[0])
    parts = [f'<div class="decision"><p><strong>Release candidate: {escape(checkpoint)}</strong>, {escape(text)}</p>']
    if note := decision_note(report):
        parts.append(f"<p>{escape(note)}</p>")
    parts.append("</div>")
    if len(report.decisions) > 1:
        earlier = "".join(f"<li>{escape(c)}, {escape(t)}</li>" for c, t in map(decision_text, report.decisions[1:]))
        parts.append(f"<p>Earlier decisions:</p><ul>{earlier}</ul>")
    return "\n".join(parts)


def _leaderboard(report: Report) -> str:
    names = [m.name for m in report.metrics]
    recommended = report.recommendations["overall"].checkpoint
    head = "".join(f"<th>{escape(h)}</th>" for h in ["checkpoint", "epoch", "weights", "setting"] +
                   [metric_header(report, m) for m in names])
    rows = []
    for row in report.rows:
        mark = ' class="recommended"' if row.info.file_name == recommended else ""
        star = " ★" if mark else ""  # U+2605 is in common text fonts; the emoji star is not
        cells = [f"<td>{escape(row.info.file_name)}{star}</td>",
                 f'<td class="num">{"–" if row.info.epoch is None else row.info.epoch}</td>',
                 f"<td>{weights(row)}</td>", f"<td>{escape(report.where(row.setting, row.info))}</td>"]
        cells += [f'<td class="num">{escape(metric_cell(row, m))}</td>' for m in names]
        rows.append(f"<tr{mark}>{''.join(cells)}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(rows) +
            "\n</tbody></table></div>\n<p><small>★ recommended. ↑ higher is better, ↓ lower is better; "
            "a prompt role in brackets marks a "
            "metric judged on those prompts only.</small></p>")


def _plots(report: Report) -> str:
    from .plots import figure_svg, report_figures

    parts = ['<div class="plots">']
    for i, (metric, figure) in enumerate(report_figures(report)):
        caption = escape(report.metric(metric).description)
        parts.append(f"<figure>{figure_svg(figure, f'plot{i}')}<figcaption><strong>{escape(metric)}</strong>: "
                     f"{caption}</figcaption></figure>")
    parts.append("</div>")
    return "\n".join(parts)


def _strips(report: Report) -> str:
    parts = []
    for strip in report.strips:
        info = strip.checkpoint
        parts.append(f"<h3>{escape(info.label)}, {escape(report.where(strip.setting, strip.checkpoint))} <small>({escape(strip.why)})</small></h3>")
        parts.append('<div class="strip">')
        for image in strip.images:
            uri, upscaled = image_data_uri(image.path)
            text = f"{image.prompt} (seed {image.seed})"
            parts.append(f'<figure><img src="{uri}" alt="{escape(text)}" title="{escape(text)}"'
                         f'{" class=upscaled" if upscaled else ""}><figcaption>{escape(text)}</figcaption></figure>')
        parts.append("</div>")
    return "\n".join(parts)


def _metrics_table(report: Report) -> str:
    rows = "".join(f"<tr><td>{escape(m.name)}</td><td>{'higher' if m.higher_is_better else 'lower'} is better</td>"
                   f"<td>{escape(m.prompts or 'all')}</td><td>{escape(m.description)}</td></tr>"
                   for m in report.metrics)
    return ("<table><thead><tr><th>metric</th><th>direction</th><th>prompts</th><th>what it measures</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def render_html(report: Report) -> str:
    title = f"evalsvc report: run {report.run}"
    strips = _strips(report)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Recommendation</h2>", _recommendations(report),
        "<h2>Release decision</h2>", _decision(report),
        "<h2>Leaderboard</h2>", _leaderboard(report),
        *[part for m in report.portability for part in (f"<h2>Portability: checkpoint x {escape(m.axis)}</h2>",
                                                       portability_html(m, report.config.primary))],
        "<h2>Metrics by epoch</h2>", _plots(report),
        *(["<h2>Images of the top candidates</h2>",
           f"<p>The same {escape(report.config.prompt_role)} prompts and seeds for every checkpoint, each at its "
           "best CFG.</p>", strips] if strips else []),
        "<h2>Notes</h2>", '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in report.notes()) + "</ul>",
        _metrics_table(report),
        "</body>", "</html>", ""])
