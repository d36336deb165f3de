"""The recommendation's summary and forest plot, and the report's figures, on a report made of synthetic scores
(no store): the best at 0 and excluded candidates last, a summary of at most three short lines, titles that are
not clipped, legends that keep off the plot, the loss on its own axes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from evalsvc.report.markdown import summary_markdown
from evalsvc.report.model import CheckpointRow, LossPoint, MetricInfo, Report, ReportConfig, report_json
from evalsvc.report.plots import figure_svg, forest_figure, metric_figure
from evalsvc.report.summary import recommendation_summary
from evalsvc.scoring.results import CheckpointInfo
from evalsvc.setting import Setting
from evalsvc.stats import BootstrapConfig, Candidate, estimate_scores, recommend
from evalsvc.stats.flag import Flag
from evalsvc.stats.forest import forest_rows

AT7 = Setting(cfg=7.0, steps=20, sampler="euler", size=(64, 64))
BOOT = BootstrapConfig(resamples=400)
# epoch -> true mean of clip_t: epoch 1 clearly worse, 2 to 5 within noise of the best (4); epoch 9 overcooked
MEANS = {1: 0.20, 2: 0.30, 3: 0.301, 4: 0.303, 5: 0.30}


PROMPT_EFFECT = np.random.default_rng(0).normal(0, 0.02, 12)  # shared by every checkpoint, as real prompts are


def _scores(mean: float, rng) -> dict:
    return {(p, s): mean + PROMPT_EFFECT[p] + rng.normal(0, 0.01) for p in range(12) for s in range(2)}


@pytest.fixture(scope="module")
def report() -> Report:
    return synthetic_report()


def synthetic_report() -> Report:
    """Epochs 1 to 5 of one raw series, an overcooked candidate and another of their own series (drawn as dotted
    lines with long legend labels), a base, two metrics and a loss."""
    rng = np.random.default_rng(3)
    candidates = [Candidate(f"purple-{e:06d}.safetensors", e, False, AT7, _scores(m, rng), where="CFG 7, 20 steps")
                  for e, m in MEANS.items()]
    candidates.append(Candidate("purple-overcooked-000009.safetensors", 9, False, AT7, _scores(0.33, rng),
                                (Flag("overcooked", "overcook", 1.9, 1.0, "mean overcook z-score 1.90 against the base "
                                                                      "(limit 1.00)"),),
                                "CFG 7, 20 steps"))
    rec = recommend(candidates, higher_is_better=True, config=BOOT)
    rows = [CheckpointRow(CheckpointInfo(f"sha{c.name}", c.name, c.epoch, False, "candidate", c.name.rsplit("-", 1)[0]
                                         if c.flags else "purple"), AT7,
                          {"clip_t": estimate_scores(c.scores, BOOT)}, {}) for c in candidates]
    rows.append(CheckpointRow(CheckpointInfo("shaother", "purple-lower-learning-rate-000009.safetensors", 9, False,
                                             "candidate", "purple-lower-learning-rate"), AT7,
                              {"clip_t": estimate_scores(_scores(0.25, rng), BOOT)}, {}))  # not in the recommendation
    rows.append(CheckpointRow(CheckpointInfo("shabase", "toy-sd15", None, False, "base"), AT7,
                              {"clip_t": estimate_scores(_scores(0.18, rng), BOOT)}, {}))
    metrics = (MetricInfo("clip_t", "image", True, "CLIP image-text similarity", "target"),
               MetricInfo("clip_t_untriggered", "image", True, "the same without the trigger word", "target"))
    for row in rows:
        row.metrics["clip_t_untriggered"] = row.metrics["clip_t"]
    loss = tuple(LossPoint(step, (step - 1) // 30 + 1, 0.3 / step ** 0.3) for step in range(1, 151))
    return Report("purple", ReportConfig(bootstrap=BOOT), metrics, tuple(rows), {"overall": rec}, loss, (), (),
                  settings=(AT7,))


def test_forest_rows_put_the_best_at_zero_then_by_difference_and_the_excluded_last(report):
    rec = report.recommendations["overall"]
    rows = forest_rows(rec, higher_is_better=True)
    assert [r.name for r in rows][0] == rec.best == "purple-000004.safetensors"
    assert (rows[0].difference, rows[0].ci_low, rows[0].ci_high) == (0.0, 0.0, 0.0) and rows[0].best
    assert rows[-1].name == "purple-overcooked-000009.safetensors" and rows[-1].status == "excluded"
    means = {v.name: v.mean.mean for v in rec.verdicts}
    assert rows[-1].ci_low is None and rows[-1].difference == pytest.approx(
        means["purple-overcooked-000009.safetensors"] - means[rec.best]) and rows[-1].difference > 0
    compared = rows[1:-1]
    assert [r.difference for r in compared] == sorted((r.difference for r in compared), reverse=True)
    assert {r.status for r in compared} == {"recommended", "tied", "worse"}
    assert next(r for r in rows if r.name == "purple-000001.safetensors").status == "worse"
    for r in compared:
        assert r.ci_low <= r.difference <= r.ci_high


def test_json_lists_each_checkpoints_flags_by_name_with_their_evidence(report):
    listed = {c["name"]: c for c in report_json(report)["checkpoints"]}
    flagged = listed["purple-overcooked-000009.safetensors"]
    assert flagged["flags"] == ["overcooked"]
    assert flagged["flag_evidence"] == [{"name": "overcooked", "metric": "overcook", "value": 1.9, "threshold": 1.0,
                                         "evidence": "mean overcook z-score 1.90 against the base (limit 1.00)"}]
    assert all(c["flags"] == [] and c["flag_evidence"] == [] for name, c in listed.items() if c is not flagged)
    verdict = next(v for v in report_json(report)["recommendation"]["verdicts"] if v["flags"])
    assert verdict["checkpoint"] == "purple-overcooked-000009.safetensors" and verdict["status"] == "excluded"


def test_forest_rows_orient_lower_is_better_so_that_positive_favours_the_candidate():
    rng = np.random.default_rng(5)
    candidates = [Candidate(f"c{e}", e, False, AT7, _scores(m, rng)) for e, m in ((1, 0.5), (2, 0.2), (3, 0.9))]
    candidates.append(Candidate("flagged", 4, False, AT7, _scores(0.1, rng),
                                (Flag("memorised", "memorised", 0.9, 0.5, "90% of images are near-copies"),)))
    rows = forest_rows(recommend(candidates, higher_is_better=False, config=BOOT), higher_is_better=False)
    assert [r.name for r in rows] == ["c2", "c1", "c3", "flagged"]
    assert rows[1].difference == pytest.approx(-0.3, abs=0.05) and rows[2].difference == pytest.approx(-0.7, abs=0.05)
    assert rows[3].difference == pytest.approx(0.1, abs=0.05)  # lower than the best: would be better, but flagged


def test_the_summary_says_what_where_and_why_in_three_short_lines(report):
    s = recommendation_summary(report)
    assert s.checkpoint == report.recommendations["overall"].checkpoint == "purple-000002.safetensors"
    assert "epoch 2" in s.what and "clip_t" in s.what
    assert "CFG 7, 20 steps" in s.setting and "--judge best" in s.setting
    assert "purple-000004" in s.why  # the best it is judged against
    assert "1 significantly worse" in s.why and "excluded: purple-overcooked-000009 (overcooked)" in s.why
    assert "also within it: purple-000003, purple-000005" in s.why
    assert s.why.endswith(".") and re.sub(r"\d\.\d", "", s.why).count(".") == 1  # one sentence
    lines = summary_markdown(report)
    assert len(lines) == 3 and "**purple-000002.safetensors**" in lines[0]
    assert all(len(line) <= 200 for line in lines), lines  # short lines, not a paragraph


def _layout(fig):
    """The figure laid out and drawn: (its box, axes, legends, renderer), boxes in display pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig.bbox, fig.axes, fig.legends, canvas.get_renderer()


def test_metric_plots_keep_the_legend_below_the_axes_and_the_title_whole(report):
    for metric in ("clip_t", "clip_t_untriggered"):
        fig = metric_figure(report, metric)
        figure, axes, legends, renderer = _layout(fig)
        (legend,) = legends
        box = legend.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), metric
            assert box.y1 <= ax.get_window_extent(renderer).y0  # below every axes
        assert box.x0 >= figure.x0 - 1 and box.x1 <= figure.x1 + 1  # not cut off at the sides
        plot_width = max(a.get_window_extent(renderer).x1 for a in axes) - min(a.get_window_extent(renderer).x0
                                                                             for a in axes)
        assert plot_width >= 0.7 * figure.width, (metric, plot_width / figure.width)
        assert box.height <= 0.3 * figure.height, (metric, box.height / figure.height)  # a few compact rows
        assert "raw, 95% CI" in [t.get_text() for t in legend.get_texts()]  # a line and its band: one entry
        title = fig.get_suptitle()
        assert title.startswith(f"{metric} (higher is better; target prompts)")
        tbox = fig._suptitle.get_window_extent(renderer)
        assert figure.x0 <= tbox.x0 and tbox.x1 <= figure.x1 and tbox.y1 <= figure.y1
        svg = figure_svg(fig, f"t-{metric}")
        assert f">{title}<" in svg.replace("&#39;", "'")  # the full title as SVG text


def test_the_loss_has_its_own_small_axes_beside_the_primary_metric_only(report):
    primary, other = metric_figure(report, "clip_t"), metric_figure(report, "clip_t_untriggered")
    _, axes, _, renderer = _layout(primary)
    assert len(axes) == 2 and len(other.axes) == 1
    metric_ax, loss_ax = axes
    assert loss_ax.get_title() == "training loss" and metric_ax.get_ylabel() == "clip_t"
    m, lo = metric_ax.get_window_extent(renderer), loss_ax.get_window_extent(renderer)
    assert lo.x0 > m.x1 and lo.width < 0.5 * m.width  # beside it, smaller
    assert [line.get_label() for line in loss_ax.get_lines()][-1] == "training loss (mean of 3 steps)"
    assert not [line for line in metric_ax.get_lines() if "loss" in line.get_label()]


def test_the_forest_plot_has_one_row_per_candidate_a_zero_line_and_the_statuses(report):
    fig = forest_figure(report)
    figure, (ax,), _, renderer = _layout(fig)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("purple-000004") and labels[-1].startswith("purple-overcooked")
    assert len(labels) == 6
    assert any(line.get_xdata()[0] == 0 == line.get_xdata()[-1] and line.get_linestyle() == "--"
               for line in ax.get_lines())
    svg = figure_svg(fig, "forest")
    for text in ("best", "recommended", "tied", "worse", "excluded: overcooked", "purple-overcooked-000009"):
        assert re.search(rf">{re.escape(text)}<", svg), text
    for label in ax.get_yticklabels():
        assert label.get_window_extent(renderer).x0 >= figure.x0  # the names are not cut off
