"""`evalsvc report` on the shortened demo run: the JSON numbers match the scores table, the Markdown has the
leaderboard and the recommendation, the HTML is offline with SVG plots and image strips, bad runs are refused."""

from __future__ import annotations

import json
import re
from collections import Counter
from html import escape as html_escape

import duckdb
import pytest

from evalsvc.cli import main


def _report(root, tmp_path, fmt, capsys, *extra):
    out = tmp_path / f"report.{fmt}"
    assert main(["report", "--store", str(root), "--run", "purple", "--format", fmt, "--out", str(out), *extra]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    return out.read_text(encoding="utf-8")


def _means_by_sql(root, metric: str, role: str | None) -> dict[tuple[str, float], float]:
    """{(checkpoint file, cfg): mean} of an image-level metric straight from the tables."""
    db = duckdb.connect(str(root / "evalsvc.duckdb"), read_only=True)
    try:
        rows = db.execute(
            "SELECT c.file_name, w.cfg, avg(s.value) FROM scores s JOIN work w ON w.key = s.key "
            "JOIN grid_cells g ON g.key = s.key AND g.run = 'purple' "
            "JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id "
            "JOIN checkpoints c ON c.sha256 = w.checkpoint "
            "WHERE s.metric = ? AND s.value IS NOT NULL AND (? IS NULL OR p.role = ?) GROUP BY 1, 2",
            [metric, role, role]).fetchall()
    finally:
        db.close()
    return {(name, float(cfg)): mean for name, cfg, mean in rows}


def test_json_numbers_match_the_scores_table(short_demo, tmp_path, capsys):
    root, demo_out = short_demo
    report = json.loads(_report(root, tmp_path, "json", capsys))
    assert report["run"] == "purple" and report["primary"] == "clip_t"
    candidates = {c["name"] for c in report["checkpoints"] if c["role"] == "candidate"}
    assert len(candidates) == 4 and sum(c["role"] == "base" for c in report["checkpoints"]) == 1
    for key in ("recommendation", "recommendation_raw", "recommendation_ema"):
        rec = report[key]
        assert rec["checkpoint"] in candidates and rec["best"] in candidates and rec["reasons"]
        assert {"epoch", "ema", "cfg", "verdicts"} <= rec.keys()
    assert report["recommendation_raw"]["ema"] is False and report["recommendation_ema"]["ema"] is True
    # The same rule as the demo's printout, per kind of weights.
    assert f"raw: recommended {report['recommendation_raw']['checkpoint']} " in demo_out
    assert f"EMA: recommended {report['recommendation_ema']['checkpoint']} " in demo_out

    target = _means_by_sql(root, "clip_t", "target")
    for checkpoint in report["checkpoints"]:
        primary = checkpoint["metrics"]["clip_t"]
        assert primary["ci_low"] <= primary["mean"] <= primary["ci_high"]
        assert primary["higher_is_better"] is True and primary["prompt_role"] == "target"
        assert primary["cfg"] == checkpoint["cfg"]
        by_cfg = {cfg: mean for (name, cfg), mean in target.items() if name == checkpoint["name"]}
        assert checkpoint["cfg"] == max(by_cfg, key=by_cfg.get)  # the best CFG for the primary metric
        assert primary["mean"] == pytest.approx(by_cfg[checkpoint["cfg"]], abs=1e-12)
    # Adherence metrics on target prompts, the others on every prompt they have (drift: holdout only).
    oracle, drift = _means_by_sql(root, "oracle", "target"), _means_by_sql(root, "drift", None)
    for checkpoint in report["checkpoints"]:
        key = (checkpoint["name"], checkpoint["cfg"])
        assert checkpoint["metrics"]["oracle"]["mean"] == pytest.approx(oracle[key], abs=1e-12)
        if checkpoint["role"] == "candidate":
            assert checkpoint["metrics"]["drift"]["mean"] == pytest.approx(drift[key], abs=1e-12)
        else:
            assert "drift" not in checkpoint["metrics"]
    assert report["metrics"]["drift"]["prompt_role"] == "holdout"
    db = duckdb.connect(str(root / "evalsvc.duckdb"), read_only=True)
    losses = db.execute("SELECT step, epoch, loss FROM losses WHERE run = 'purple' ORDER BY step").fetchall()
    db.close()
    assert [(p["step"], p["epoch"], p["loss"]) for p in report["loss"]] == losses and losses


def test_markdown_has_the_leaderboard_and_the_recommendation(short_demo, copy_store, capsys):
    root = copy_store(short_demo[0])
    assert main(["report", "--store", str(root), "--run", "purple"]) == 0  # default: Markdown in the store
    path = root / "reports" / "purple.md"
    assert capsys.readouterr().out.strip() == str(path)
    text = path.read_text(encoding="utf-8")
    data = json.loads(_report(root, root, "json", capsys))
    recommended = data["recommendation"]["checkpoint"]
    assert "| checkpoint | epoch | weights | setting | clip_t ↑ (target) |" in text
    summary = text.split("\n\n")[1].splitlines()  # after the title: the three-line summary, then the fold
    assert len(summary) == 3 and summary[0].startswith(f"Recommended: **{recommended}** (")
    assert "by clip_t on target prompts" in summary[0] and "(--judge best)" in summary[1]
    assert summary[2].startswith("Why: ")
    fold = text.index("<details><summary>details</summary>")
    assert fold < text.index("### Release decision") and text.index("</details>") < text.index("### Release decision")
    assert f"| {data['checkpoints'][0]['name']} | " in text and "| CFG 5 |" in text  # one setting: named by its CFG
    assert f"| **{recommended}** ⭐ |" in text
    for checkpoint in data["checkpoints"]:
        e = checkpoint["metrics"]["clip_t"]
        assert re.search(rf"^\| (\*\*)?{re.escape(checkpoint['name'])}.*\| {e['mean']:.4g} \[", text, re.M)
    for reason in data["recommendation"]["reasons"]:
        assert f"- {reason}" in text and text.index(f"- {reason}") > fold  # the sentences inside the fold
    assert "### Flags" in text


def test_html_is_offline_with_svg_plots_and_image_strips(short_demo, tmp_path, capsys):
    root, _ = short_demo
    text = _report(root, tmp_path, "html", capsys)
    # Nothing is fetched: no URL in an attribute, no stylesheet/script/font links, no CSS url() or @import.
    assert not re.search(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//|@import|<script|<link|<iframe", text, re.I)
    assert "http://" not in text and "https://" not in text
    data = json.loads(_report(root, tmp_path, "json", capsys))
    assert text.count("<svg") == 1 + len(data["metrics"]) >= 6  # the forest plot and one plot per metric
    assert "training loss" in text  # the loss curve beside the primary metric's plot
    # The recommendation first: summary, forest plot, the sentences in a fold; the curves further down.
    recommended = data["recommendation"]["checkpoint"]
    summary = text.index(f"Recommended: <strong>{recommended}</strong>")
    forest, fold = text.index('<figure class="forest">'), text.index("<details><summary>details</summary>")
    assert summary < forest < fold < text.index("</details>") < text.index("<h2>Metrics by epoch</h2>")
    folded = text[fold:text.index("</details>")]
    for reason in data["recommendation"]["reasons"]:
        assert html_escape(reason) in folded
    for verdict in data["recommendation"]["verdicts"]:  # one forest row per candidate
        assert f">{html_escape(verdict['checkpoint'].removesuffix('.safetensors'))}<" in text[forest:fold]
    strips = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)
    assert len(strips) >= 3 * 2
    ids = Counter(re.findall(r'\bid="([^"]+)"', text))
    assert not [i for i, n in ids.items() if n > 1]  # many plots on one page: ids stay unique
    assert data["recommendation"]["checkpoint"] in text


def test_unknown_run_and_unscored_run_are_refused(short_demo, copy_store, capsys):
    root = copy_store(short_demo[0])
    assert main(["report", "--store", str(root), "--run", "nope"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalsvc: error: no run named 'nope'") and "\n" not in err
    assert main(["report", "--store", str(root), "--run", "purple", "--primary", "kid"]) != 0
    assert "image-level metric" in capsys.readouterr().err
    db = duckdb.connect(str(root / "evalsvc.duckdb"))
    db.execute("DELETE FROM scores")
    db.close()
    assert main(["report", "--store", str(root), "--run", "purple", "--format", "json"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == "evalsvc: error: run 'purple' has no scores yet; run `evalsvc score --run purple` first"
    assert not (root / "reports" / "purple.json").exists()


def test_release_decisions_are_shown_latest_first_in_every_format(short_demo, copy_store, capsys):
    from evalsvc.decisions import mark_release_candidate
    from evalsvc.store import open_store

    root = copy_store(short_demo[0])
    data = json.loads(_report(root, root, "json", capsys))
    assert data["decisions"] == []
    recommended = data["recommendation"]["checkpoint"]
    other = next(c["name"] for c in data["checkpoints"] if c["role"] == "candidate" and c["name"] != recommended)
    with open_store(root) as store:
        first = mark_release_candidate(store.db, "purple", recommended, "ann", "best clip_t | first look")
        latest = mark_release_candidate(store.db, "purple", other, "bob", "fewer\nartifacts in blind votes")
    when = latest.decided_at.strftime("%Y-%m-%d %H:%M")

    data = json.loads(_report(root, root, "json", capsys))
    assert [(d["checkpoint"], d["decided_by"], d["reason"]) for d in data["decisions"]] == [
        (other, "bob", "fewer\nartifacts in blind votes"), (recommended, "ann", "best clip_t | first look")]
    assert data["decisions"][0]["decided_at"] == latest.decided_at.isoformat() + "+00:00"
    assert data["decisions"][1]["decided_at"] == first.decided_at.isoformat() + "+00:00"

    md = _report(root, root, "md", capsys)
    section = md.split("### Release decision\n", 1)[1].split("\n### ", 1)[0]
    assert f"**Release candidate: {other}**, marked by bob on {when} UTC: fewer artifacts in blind votes" in section
    assert f"differs from the checkpoint recommended by clip_t ({recommended})" in section
    assert "Earlier decisions:" in section and f"- {recommended}, marked by ann on " in section
    assert "best clip_t \\| first look" in section  # a table-safe pipe
    assert md.index("### Release decision") < md.index("### Leaderboard")

    html = _report(root, root, "html", capsys)
    section = html.split("<h2>Release decision</h2>", 1)[1].split("<h2>", 1)[0]
    assert (f"<strong>Release candidate: {other}</strong>, marked by bob on {when} UTC: fewer artifacts in blind "
            "votes") in section
    assert f"<li>{recommended}, marked by ann on " in section and "best clip_t | first look</li>" in section


def test_a_run_without_decisions_says_so(short_demo, tmp_path, capsys):
    root, _ = short_demo
    md = _report(root, tmp_path, "md", capsys)
    assert ("### Release decision\n\nNo release candidate has been marked for this run yet (the app's Decide tab "
            "marks one).\n") in md
    html = _report(root, tmp_path, "html", capsys)
    assert "<h2>Release decision</h2>\n<p>No release candidate has been marked for this run yet" in html
    assert json.loads(_report(root, tmp_path, "json", capsys))["decisions"] == []


def test_a_goal_report_shows_its_criteria_constraints_and_flags(short_demo, tmp_path, capsys):
    root, _ = short_demo
    report = json.loads(_report(root, tmp_path, "json", capsys, "--goal", "concept"))
    assert report["goal"]["name"] == "concept" and report["primary"] == "clip_t"
    assert report["goal"]["thresholds"]["overfit_diversity_share"] == 0.6
    verdicts = report["recommendation"]["verdicts"]
    assert all([c["objective"] for c in v["criteria"]] == ["fidelity"] for v in verdicts)
    for v in verdicts:
        (fidelity,) = v["criteria"]
        assert fidelity["metric"] == "clip_t" and (fidelity["difference"] is None) == (v["status"] == "excluded")
        if fidelity["difference"] is not None:
            assert fidelity["ties_best"] == (fidelity["difference"]["ci_high"] >= 0)
    by_name = {c["name"]: c for c in report["checkpoints"]}
    for v in verdicts:  # every flag has its evidence, in the checkpoints' entries too
        assert by_name[v["checkpoint"]]["flags"] == v["flags"]
        assert [e["name"] for e in by_name[v["checkpoint"]]["flag_evidence"]] == v["flags"]
    markdown = _report(root, tmp_path, "md", capsys, "--goal", "concept")
    assert "### Goal" in markdown and "Judged as a concept LoRA: fidelity by clip_t" in markdown
    assert "- overfit: diversity_ssim across seeds on holdout prompts below 60% of the base's" in markdown
    assert "| checkpoint | status | fidelity (clip_t) | flags |" in markdown
    html = _report(root, tmp_path, "html", capsys, "--goal", "concept")
    assert "<h2>Goal</h2>" in html and '<table class="criteria">' in html
    assert all(f'<tr class="{v["status"]}"><td>{v["checkpoint"]} (' in html for v in verdicts)
    # --primary must agree with the goal's fidelity metric
    assert main(["report", "--store", str(root), "--run", "purple", "--goal", "concept", "--primary", "oracle"]) == 2
    assert "--primary oracle contradicts --goal concept" in capsys.readouterr().err
