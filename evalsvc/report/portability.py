"""Portability: how each checkpoint does on every base model (and with every LoRA stack) it was sampled on.

One matrix per axis that varies in the run (`base`, `stack`): a row per checkpoint, a column per value.
A cell is the checkpoint at its best setting among those with that value (the other axes free), with the
primary metric's mean and nested-bootstrap interval, and the paired difference to the reference row at
that same setting: the base model itself on that base (does the LoRA's effect survive there?). Scores of
different settings are never pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from html import escape

from ..setting import Setting
from ..stats import BootstrapConfig, Estimate, paired_difference
from ..stats.judge import pick_best

AXES = ("base", "stack")


@dataclass(frozen=True)
class PortabilityCell:
    setting: Setting
    estimate: Estimate
    vs_reference: Estimate | None  # checkpoint − the reference row at the same setting (None for the reference)


@dataclass(frozen=True)
class Portability:
    axis: str  # "base" or "stack"
    columns: tuple[str, ...]  # the axis's values, as `Setting.value` writes them
    rows: tuple[tuple[str, dict[str, PortabilityCell]], ...]  # (checkpoint file name, {column: cell})
    reference: str  # what `vs_reference` is measured against, in words


def portability(axis: str, estimates: Mapping[str, Mapping[Setting, Estimate]],
                values: Mapping[tuple[str, Setting], Mapping], names: Mapping[str, str], order: list[str],
                bases: Mapping[str, str], higher_is_better: bool, config: BootstrapConfig) -> Portability | None:
    """The matrix over `axis`, or None when the axis has one value in the run.

    estimates: {sha: {setting: Estimate}} of the primary metric; values: {(sha, setting): {(prompt, seed): v}};
    order: the checkpoints' shas in report order; bases: {base file name: its sha}, the one the run's LoRAs were
    trained on first (the first column). The reference of a cell is,
    for `base`, that base's own images at the same setting; for `stack`, the same checkpoint without a stack."""
    settings = {s for by in estimates.values() for s in by}
    first = next(iter(bases), None)
    columns = sorted({s.value(axis, names) for s in settings},
                     key=lambda v: (v != first if axis == "base" else v != "none", v))
    if len(columns) < 2:
        return None
    rows = []
    for sha in order:
        by_setting = estimates.get(sha, {})
        cells = {}
        for column in columns:
            here = {s: e for s, e in by_setting.items() if s.value(axis, names) == column}
            if not here:
                continue
            setting = pick_best({s: values[(sha, s)] for s in here}, higher_is_better)[0]
            reference = _reference(axis, sha, setting, column, bases)
            versus = None
            if reference is not None and reference in values and (sha, setting) in values:
                mine, theirs = values[(sha, setting)], values[reference]
                if any(k in theirs for k in mine):
                    versus = _oriented(paired_difference(mine, theirs, config), higher_is_better)
            cells[column] = PortabilityCell(setting, here[setting], versus)
        if cells:
            rows.append((names.get(sha, sha[:12]), cells))
    what = "the base model itself" if axis == "base" else "the same checkpoint without a stack"
    return Portability(axis, tuple(columns), tuple(rows), what)


def _reference(axis: str, sha: str, setting: Setting, column: str, bases: Mapping[str, str]):
    """(sha, setting) of the row a cell is measured against, or None when it is the reference itself."""
    if axis == "base":
        base = bases.get(column)
        return None if base is None or base == sha else (base, setting)
    return (sha, replace(setting, stack=())) if setting.stack else None


def _oriented(e: Estimate, higher_is_better: bool) -> Estimate:
    if higher_is_better:
        return e
    return Estimate(-e.mean, -e.ci_high, -e.ci_low, e.n, e.clusters)


def cell_text(cell: PortabilityCell | None) -> str:
    if cell is None:
        return "–"
    e, d = cell.estimate, cell.vs_reference
    text = f"{e.mean:.4g} [{e.ci_low:.4g}, {e.ci_high:.4g}]"
    return text if d is None else f"{text}; Δ {d.mean:+.3g} [{d.ci_low:+.3g}, {d.ci_high:+.3g}]"


def portability_json(p: Portability, names: Mapping[str, str]) -> dict:
    def estimate(e: Estimate | None) -> dict | None:
        return None if e is None else {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n,
                                       "n_prompts": e.clusters}

    return {"axis": p.axis, "columns": list(p.columns), "reference": p.reference,
            "rows": [{"checkpoint": name, "cells": {column: {"setting": c.setting.as_dict(names),
                                                             **estimate(c.estimate),
                                                             "vs_reference": estimate(c.vs_reference)}
                                                    for column, c in cells.items()}}
                     for name, cells in p.rows]}


def portability_markdown(p: Portability, metric: str) -> list[str]:
    lines = ["| checkpoint | " + " | ".join(f"{p.axis} {c}" for c in p.columns) + " |",
             "|---|" + "---|" * len(p.columns)]
    for name, cells in p.rows:
        lines.append(f"| {name} | " + " | ".join(cell_text(cells.get(c)) for c in p.columns) + " |")
    lines += ["", f"Each cell: {metric} at the checkpoint's best setting with that {p.axis} [95% CI]; Δ = the paired "
                  f"difference to {p.reference} at the same setting (+ = better)."]
    return lines


def _colour(value: float, low: float, high: float) -> str:
    """A light-to-dark blue for value in [low, high] (text stays readable)."""
    t = 0.5 if high <= low else (value - low) / (high - low)
    light, dark = (240, 246, 255), (66, 133, 214)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(light, dark))
    return f"rgb({r},{g},{b})"


def portability_html(p: Portability, metric: str) -> str:
    """The matrix as a heat map: each cell coloured by the metric's mean, its interval and Δ written in it."""
    means = [c.estimate.mean for _, cells in p.rows for c in cells.values()]
    low, high = min(means), max(means)
    head = "".join(f"<th>{escape(p.axis)} {escape(c)}</th>" for c in p.columns)
    body = []
    for name, cells in p.rows:
        tds = []
        for column in p.columns:
            cell = cells.get(column)
            if cell is None:
                tds.append('<td class="evs-heat-empty">–</td>')
                continue
            e, d = cell.estimate, cell.vs_reference
            delta = "" if d is None else (f'<br><small>Δ {d.mean:+.3g} [{d.ci_low:+.3g}, {d.ci_high:+.3g}]'
                                          '</small>')
            tds.append(f'<td class="evs-heat" style="background:{_colour(e.mean, low, high)}" '
                       f'data-mean="{e.mean:.6g}"><b>{e.mean:.4g}</b> <small>[{e.ci_low:.4g}, {e.ci_high:.4g}]'
                       f'</small>{delta}</td>')
        body.append(f"<tr><th>{escape(name)}</th>{''.join(tds)}</tr>")
    return (f'<table class="evs-portability" data-axis="{escape(p.axis)}"><thead><tr><th>checkpoint</th>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table><p><small>{escape(metric)} at each checkpoint's best "
            f"setting with that {escape(p.axis)}, 95% CI in brackets; darker is higher. Δ: paired difference to "
            f"{escape(p.reference)} at the same setting (+ = better).</small></p>")
