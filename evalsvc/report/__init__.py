"""`evalsvc report`: a run's leaderboard, recommendation, release decisions, plots and images as Markdown, HTML
or JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .model import Report, ReportConfig, gather_report, report_json

FORMATS = {"md": "md", "html": "html", "json": "json"}  # format -> file extension


def render_report(report: Report, fmt: str) -> str:
    """The report as text in `fmt` (one of FORMATS)."""
    if fmt == "json":
        return json.dumps(report_json(report), indent=2) + "\n"
    if fmt == "md":
        from .markdown import render_markdown

        return render_markdown(report)
    if fmt == "html":
        from .html import render_html

        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")


def default_report_path(store_root: Path, run: str, fmt: str) -> Path:
    """`<store>/reports/<run>.<ext>`, with characters unsafe in a file name replaced."""
    return Path(store_root) / "reports" / f"{re.sub(r'[^A-Za-z0-9._-]', '_', run)}.{FORMATS[fmt]}"


def write_report(report: Report, fmt: str, path: Path) -> Path:
    """Render and write atomically (temp file, then rename)."""
    text = render_report(report, fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["FORMATS", "Report", "ReportConfig", "default_report_path", "gather_report", "render_report",
           "report_json", "write_report"]
