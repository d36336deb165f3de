"""A regression verdict as Markdown (a pull-request comment), offline HTML and JSON.

Deltas are candidate − baseline, oriented so that + means the candidate is better (for lower-is-better
metrics the sign is flipped). The power line says the smallest change each gate's suite could detect.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from html import escape
from pathlib import Path

from ..stats.noninferiority import OVERALL, GateResult

ARROW = {True: "↑", False: "↓"}


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:+.4f}" if value else "0"


def _size(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.4f}"


def _notable(slices: list[GateResult], most: int = 10) -> list[GateResult]:
    """The slice rows a pull-request comment shows: every gated one, then the `most` informational ones where the
    candidate is worse with the whole 95% CI below 0, worst first."""
    gated = [r for r in slices if not r.informational]
    worse = sorted((r for r in slices if r.informational and r.ci_high < 0), key=lambda r: r.mean)
    return gated + worse[:most]


def _rule(r: GateResult) -> str:
    if r.informational:
        return "informational"
    if r.improve is not None:
        return f"improve > {r.improve:g}"
    return f"margin {r.margin:g}"


def _result(r: GateResult) -> str:
    if r.passed is None:
        return ""
    return "pass" if r.passed else "**FAIL**"


def _headline(result) -> str:
    word = "PASS" if result.evaluation.verdict == "pass" else "REGRESSION"
    return (f"evalsvc regress: {word} — candidate {result.candidate.file_name} [{result.candidate.sha256[:12]}] vs "
            f"baseline {result.baseline.file_name} [{result.baseline.sha256[:12]}]")


def _setting(result) -> str:
    prompts = len({k for k in result.tags})
    settings = "; ".join(result.settings.values())
    many = len(result.settings) > 1
    return (f"suite `{result.suite_name}` [{result.suite_hash[:12]}], {prompts} prompts, {result.cells} paired "
            f"(prompt, seed, setting) cells at {len(result.settings)} setting{'s' if many else ''} ({settings})"
            f"{', gated at each' if many else ''}; gates [{result.evaluation.gates_hash[:12]}]; "
            f"{result.sampled_now} images sampled now, the rest reused")


def _rows(results) -> list[str]:
    lines = ["| setting | slice | metric | Δ (+ = candidate better) | 95% CI | rule | p (Holm) | detectable | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = "–" if r.p_adjusted is None else f"{r.p_adjusted:.2g}"
        lines.append(f"| {r.setting or '–'} | {r.slice or 'all'} | {r.metric} {ARROW[r.higher_is_better]} | {_num(r.mean)} | "
                     f"{_num(r.ci_low)} to {_num(r.ci_high)} | {_rule(r)} | {p} | {_size(r.detectable)} | "
                     f"{_result(r)} |")
    return lines


def render_markdown(result) -> str:
    ev = result.evaluation
    overall = [r for r in ev.results if r.slice == OVERALL]
    slices = [r for r in ev.results if r.slice != OVERALL]
    gated = [r for r in ev.results if not r.informational]
    lines = [f"## {_headline(result)}", "", _setting(result), ""]
    if ev.failures:
        lines += ["### Failed gates", "", *[f"- {r.explain()}" for r in ev.failures], ""]
    lines += ["### Overall", "", *_rows(overall), ""]
    notable = _notable(slices)
    if slices:
        lines += ["### Slices (prompt tags and roles)", "",
                  f"Gated slices, then the largest informational changes for the worse with the whole 95% CI below 0 "
                  f"({len(notable)} of {len(slices)} rows; the HTML and JSON reports have every slice).", ""]
        lines += [*_rows(notable), ""] if notable else ["None.", ""]
    lines += ["### Power", ""]
    for r in gated:
        lines.append(f"- {r.metric} {r.where}: this suite detects a change of {_size(r.detectable)} or more "
                     f"(one-sided, Holm level); the gate's margin is {_rule(r)}"
                     + (" — **underpowered**: with this much variation between pairs, a candidate truly within "
                        "the margin would often fail" if r.underpowered else ""))
    if not gated:
        lines.append("- no gated metric")
    return "\n".join(lines) + "\n"


def report_json(result) -> dict:
    def clean(value):
        if isinstance(value, float) and math.isinf(value):
            return None
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    ev = result.evaluation
    return clean({
        "verdict": ev.verdict, "exit_code": result.exit_code, "run": result.run,
        "baseline": {"ref": result.baseline.text, "sha256": result.baseline.sha256,
                     "file_name": result.baseline.file_name},
        "candidate": {"ref": result.candidate.text, "sha256": result.candidate.sha256,
                      "file_name": result.candidate.file_name},
        "suite": {"name": result.suite_name, "hash": result.suite_hash}, "gates_hash": ev.gates_hash,
        "cfgs": list(result.cfgs), "settings": list(result.settings.values()), "cells": result.cells,
        "failures": ev.lines(),
        "results": [{**asdict(r), "worst": [[str(p), d] for p, d in r.worst], "underpowered": r.underpowered}
                    for r in ev.results],
    })


def _worst_prompts(result, count: int = 3) -> list[str]:
    """The prompts that lost most on the failed gates, else on the first gated metric."""
    ev = result.evaluation
    chosen = ev.failures or tuple(r for r in ev.results if r.slice == OVERALL and not r.informational)[:1]
    prompts: list[str] = []
    for r in chosen:
        for prompt, _ in r.worst:
            if prompt not in prompts:
                prompts.append(prompt)
    return prompts[:count]


def render_html(result, images_root: Path) -> str:
    """One offline page: the Markdown's tables, and the worst-regressed prompts, baseline beside candidate."""
    from ..report.html import image_data_uri

    ev = result.evaluation
    word = "PASS" if ev.verdict == "pass" else "REGRESSION"
    colour = "#1a7f37" if ev.verdict == "pass" else "#cf222e"

    def table(results) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("setting", "slice", "metric", "Δ (+ = candidate better)", "95% CI", "rule",
                                                  "p (Holm)", "detectable", "result"))
        body = "".join(
            f"<tr><td>{escape(r.setting or '–')}</td><td>{escape(r.slice or 'all')}</td><td>{escape(r.metric)} {ARROW[r.higher_is_better]}</td>"
            f"<td>{_num(r.mean)}</td><td>{_num(r.ci_low)} to {_num(r.ci_high)}</td><td>{escape(_rule(r))}</td>"
            f"<td>{'–' if r.p_adjusted is None else f'{r.p_adjusted:.2g}'}</td><td>{_size(r.detectable)}</td>"
            f"<td>{'' if r.passed is None else ('pass' if r.passed else '<b>FAIL</b>')}</td></tr>"
            for r in results)
        return f"<table><tr>{head}</tr>{body}</table>"

    strips = []
    for prompt in _worst_prompts(result):
        cells = sorted(k for k in result.images["candidate"] if k[0] == prompt and k in result.images["baseline"])
        row = []
        for cell in cells:
            pair = []
            for side in ("baseline", "candidate"):
                uri, small = image_data_uri(images_root / result.images[side][cell])
                style = ' style="image-rendering:pixelated"' if small else ""
                where = escape(result.settings.get(cell[2], ""))
                pair.append(f'<figure><img src="{uri}" width="192"{style}><figcaption>{side}, seed {cell[1]}, '
                            f'{where}</figcaption></figure>')
            row.append("".join(pair))
        strips.append(f"<h3>{escape(prompt)}</h3><div class=strip>{''.join(row)}</div>")
    failures = "".join(f"<li>{escape(r.explain())}</li>" for r in ev.failures)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(_headline(result))}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:90%}}.strip{{display:flex;flex-wrap:wrap;gap:8px}}
figure{{margin:0}}figcaption{{font-size:80%}}h1{{color:{colour}}}</style></head><body>
<h1>{word}</h1><p>{escape(_headline(result))}</p><p>{escape(_setting(result))}</p>
{f'<h2>Failed gates</h2><ul>{failures}</ul>' if failures else ''}
<h2>Overall</h2>{table([r for r in ev.results if r.slice == OVERALL])}
<h2>Worst prompts for the candidate, baseline beside candidate</h2>{''.join(strips) or '<p>none</p>'}
<h2>Slices</h2>{table([r for r in ev.results if r.slice != OVERALL])}
</body></html>"""


def render_all(result, images_root: Path) -> dict[str, str]:
    return {"md": render_markdown(result), "html": render_html(result, images_root),
            "json": json.dumps(report_json(result), indent=2)}
