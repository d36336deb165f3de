"""`evalsvc regress` on the toy world, where the oracle knows which checkpoint is better.

The demo run (the `full_demo` fixture) holds the undertrained epoch 1, the good epoch 6 and the overcooked LoRA,
sampled on the toyworld suite; regress reuses those cells and gates the paired deltas.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalsvc.cli import main

SELF_GATES = ""  # the default gates: clip_t with margin 0.01
CLIP_T_GATE = "[metrics.clip_t]\nmargin = 0.01\n"
DAMAGE_GATES = """
[metrics.clip_t]
margin = 0.01
[metrics.oracle]
margin = 0.02
[metrics.overcook]
margin = 0.1
"""
IMPROVE_GATES = """
# the LoRA's job: draw purple where purple is asked, without deep-frying
[metrics.overcook]
margin = 0.5
[slices.target.metrics.clip_t]
improve = 0.0
[slices.target.metrics.oracle]
improve = 0.0
"""


@pytest.fixture(scope="module")
def demo_store(full_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("regress") / "store"
    shutil.copytree(full_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    return root


def _regress(store, tmp_path, baseline, candidate, gates: str | None, *extra, name="report"):
    args = ["regress", "--store", str(store), "--baseline", baseline, "--candidate", candidate, "--suite", "toyworld",
            "--seeds", "1,2", "--cfg", "5", "--steps", "20", "--sampler", "euler", "--backbone", "toy",
            "--reference", str(store / "demo-models" / "purple-data"), "--no-progress",
            "--report", str(tmp_path / f"{name}.json"), *extra]
    if gates:
        (tmp_path / f"{name}.toml").write_text(gates)
        args += ["--gates", str(tmp_path / f"{name}.toml")]
    code = main(args)
    report = json.loads((tmp_path / f"{name}.json").read_text()) if (tmp_path / f"{name}.json").exists() else None
    return code, report


def _result(report, metric, slice_=""):
    return next(r for r in report["results"] if r["metric"] == metric and r["slice"] == slice_)


def test_a_checkpoint_against_itself_passes(demo_store, tmp_path, capsys):
    code, report = _regress(demo_store, tmp_path, "purple:6", "purple-000006.safetensors", SELF_GATES)
    assert code == 0 and report["verdict"] == "pass" and report["failures"] == []
    clip_t = _result(report, "clip_t")
    assert clip_t["passed"] and clip_t["mean"] == 0 and clip_t["n"] == 30 and not clip_t["informational"]
    assert report["baseline"]["sha256"] == report["candidate"]["sha256"]
    assert "pass: candidate purple-000006.safetensors" in capsys.readouterr().out


def test_without_scoring_options_it_scores_as_the_baselines_run_did(demo_store, tmp_path, capsys):
    args = ["regress", "--store", str(demo_store), "--baseline", "purple:5", "--candidate", "purple:6", "--suite",
            "toyworld", "--seeds", "1,2", "--cfg", "5", "--steps", "20", "--sampler", "euler", "--no-progress",
            "--report", str(tmp_path / "r.json")]
    assert main(args) in (0, 1)
    out = capsys.readouterr().out
    assert "scoring with its last settings: backbone ToyCLIP-ViT-T8, reference " in out and "purple-data" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert _result(report, "clip_t")["n"] == 30  # scored with the toy CLIP, not skipped for missing ViT-L/14


def test_the_overcooked_lora_fails_on_the_metrics_the_oracle_says_got_worse(demo_store, tmp_path, capsys):
    code, report = _regress(demo_store, tmp_path, "purple:6", "purple-overcooked-000004.safetensors", DAMAGE_GATES)
    out = capsys.readouterr().out
    assert code == 1 and report["verdict"] == "regression"
    oracle = _result(report, "oracle")
    assert oracle["ci_high"] < 0 and oracle["passed"] is False  # the oracle: worse, and the gate says so
    failed = {r["metric"] for r in report["results"] if r["passed"] is False and r["slice"] == ""}
    assert failed == {"clip_t", "oracle", "overcook"}
    for metric in failed:  # each failure is a change for the worse beyond its margin, whole CI included
        r = _result(report, metric)
        assert -r["ci_high"] > r["margin"]
        assert f"FAIL {metric} overall regressed by" in out


def test_a_better_epoch_passes_against_an_undertrained_one_with_improvement(demo_store, tmp_path):
    code, report = _regress(demo_store, tmp_path, "purple:1", "purple:6", IMPROVE_GATES)
    assert code == 0 and report["verdict"] == "pass"
    for metric in ("clip_t", "oracle"):
        r = _result(report, metric, "target")
        assert r["passed"] and r["improve"] == 0.0 and r["ci_low"] > 0
    # the reverse direction is no improvement: the undertrained epoch fails the same gates
    code, report = _regress(demo_store, tmp_path, "purple:6", "purple:1", IMPROVE_GATES, name="reverse")
    assert code == 1 and not _result(report, "oracle", "target")["passed"]


def test_the_same_gate_twice_gives_the_same_verdict_and_numbers(demo_store, tmp_path):
    first = _regress(demo_store, tmp_path, "purple:1", "purple:6", DAMAGE_GATES, name="first")
    second = _regress(demo_store, tmp_path, "purple:1", "purple:6", DAMAGE_GATES, name="second")
    assert first == second and first[1]["results"]


def test_past_verdicts_are_listed_and_reopened(demo_store, tmp_path, capsys):
    _regress(demo_store, tmp_path, "purple:6", "purple:6", SELF_GATES)
    capsys.readouterr()
    assert main(["verdicts", "--store", str(demo_store)]) == 0
    listing = capsys.readouterr().out.splitlines()
    latest = int(listing[0].split()[0])
    assert "pass" in listing[0] and "purple-000006.safetensors" in listing[0]
    assert main(["verdicts", str(latest), "--store", str(demo_store), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "report.json").read_text())
    assert main(["verdicts", "9999", "--store", str(demo_store)]) == 2


def test_bad_inputs_exit_2_with_one_clear_line(demo_store, tmp_path, capsys):
    assert _regress(demo_store, tmp_path, "purple:6", "no-such-checkpoint", None)[0] == 2
    assert "--candidate 'no-such-checkpoint': no registered checkpoint" in capsys.readouterr().err

    code, _ = _regress(demo_store, tmp_path, "purple:6", "purple:6", "[metrics.sharpness]\nmargin = 0.1\n",
                       name="unknown")
    err = capsys.readouterr().err
    assert code == 2 and "unknown.toml: metrics.sharpness" in err and "clip_t" in err

    # the baseline was gated on toyworld; a different file under the same suite name is not compared
    _regress(demo_store, tmp_path, "purple:6", "purple:6", SELF_GATES)
    toyworld = tmp_path / "toyworld.toml"
    text = (Path(__file__).resolve().parents[1] / "prompts" / "toyworld.toml").read_text()
    toyworld.write_text(text.replace("a purple circle on the left", "a purple circle on the far left"))
    capsys.readouterr()
    args = ["regress", "--store", str(demo_store), "--baseline", "purple:6", "--candidate", "purple:6", "--suite",
            str(toyworld), "--backbone", "toy", "--no-progress"]
    assert main(args) == 2
    assert "suite 'toyworld' changed since baseline purple-000006.safetensors was gated" in capsys.readouterr().err


def test_the_gates_decide_at_each_setting_of_the_grid_or_at_those_the_file_names(demo_store, tmp_path):
    code, report = _regress(demo_store, tmp_path, "purple:6", "purple-000006.safetensors", SELF_GATES,
                            "--steps", "10,20", name="two")
    assert code == 0 and report["settings"] == ["10 steps", "20 steps"]
    overall = {r["setting"]: r for r in report["results"] if r["metric"] == "clip_t" and r["slice"] == ""}
    assert set(overall) == {"10 steps", "20 steps"}  # never pooled: one gate per setting
    assert all(r["passed"] and r["n"] == 30 and not r["informational"] for r in overall.values())
    code, report = _regress(demo_store, tmp_path, "purple:6", "purple-000006.safetensors",
                            'settings = ["steps=20"]\n' + CLIP_T_GATE, "--steps", "10,20", name="named")
    gated = {r["setting"] for r in report["results"] if not r["informational"]}
    assert code == 0 and gated == {"20 steps"}
    code, _ = _regress(demo_store, tmp_path, "purple:6", "purple-000006.safetensors",
                       'settings = ["steps=30"]\n' + CLIP_T_GATE, "--steps", "10,20", name="bad")
    assert code == 2
