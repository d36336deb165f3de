"""The committed toy base and the demo loop on it (shortened: 2 epochs, 1 seed, 10 steps)."""

import pytest

from evalsvc.toy.toy_base import TOY_BASE_DIR, load_toy_base, toy_base_report
from trainer.toyworld.evaluate import OracleSampling, oracle_accuracy
from trainer.toyworld.world import KNOWN_COLOURS, Scene, all_scenes


@pytest.fixture(scope="module")
def toy_base():
    return load_toy_base()


def test_toy_base_is_small_and_documents_its_build():
    size = sum(p.stat().st_size for p in TOY_BASE_DIR.rglob("*") if p.is_file())
    assert size < 12 * 2**20
    report = toy_base_report()
    assert report["build"]["seed"] == 0 and report["training_seconds"] > 0
    assert report["oracle_known"]["images"] == 2 * len(all_scenes(KNOWN_COLOURS))


def test_toy_base_draws_known_concepts_but_not_purple(toy_base):
    scenes = all_scenes(KNOWN_COLOURS)[::9]  # 20 scenes spread over every attribute
    known = oracle_accuracy(toy_base, scenes, OracleSampling(seeds=(5,), steps=15))
    purple = oracle_accuracy(toy_base, [Scene("purple", s.shape, s.position, s.background) for s in scenes],
                             OracleSampling(seeds=(5,), steps=15))
    # measured (seed 5, 15 steps): colour 1.0, position 1.0, shape 0.6, score 0.9; chance is 1/3 for shape
    assert known["colour"] >= 0.9 and known["position"] >= 0.8 and known["shape"] >= 0.45, known
    # the text encoder knows "purple" (it is the toy CLIP's), the UNet never saw it: measured 0.6 here,
    # 0.21 over all 90 purple scenes at 2 seeds (build.json)
    assert purple["colour"] <= known["colour"] - 0.3, (purple, known)


def test_demo_trains_registers_samples_and_scores_by_oracle(short_demo, copy_store, capsys):
    from evalsvc.demo import DEMO_RUN, DemoSettings, oracle_per_checkpoint, run_demo
    from evalsvc.store import open_store
    from evalsvc.suites import load_suite

    root, out = short_demo
    assert "purple-ema-000002.safetensors" in out and "oracle" in out
    prompts = len(load_suite("toyworld").prompts)
    with open_store(root, read_only=True) as store:
        done = store.db.execute("SELECT count(*) FROM work WHERE state = 'done'").fetchone()[0]
        sizes = set(store.db.execute("SELECT DISTINCT width, height FROM work").fetchall())
        rows = oracle_per_checkpoint(store, DEMO_RUN)
    assert done == 5 * prompts  # base + 2 epochs x (raw, EMA)
    assert sizes == {(64, 64)}  # the toy base's native size (its VAE downscales 4x, not SD's 8x)
    assert [(r["weights"], r["epoch"]) for r in rows] == [
        ("base", 0), ("raw", 1), ("raw", 2), ("EMA", 1), ("EMA", 2)]
    assert all(0 <= r["target"] <= 1 and 0 <= r["holdout"] <= 1 for r in rows)
    # A second run trains nothing and samples nothing new.
    again = copy_store(root)
    settings = DemoSettings(epochs=2, seeds=(1,), steps=10, variants=None, sweep=None)
    assert run_demo(again, progress=False, settings=settings) == 0
    out = capsys.readouterr().out
    assert "already trained" in out and "0 sampled now" in out


def _variant(store, series: str):
    from evalsvc.demo import DEMO_RUN
    from evalsvc.scoring.results import run_checkpoints

    return next(i for i in run_checkpoints(store, DEMO_RUN).values() if i.series == series)


def test_full_demo_recommends_inside_the_oracles_best_set(full_demo):
    """Raw and EMA: the recommendation (clip_t) has an oracle score within the CI of the oracle's best."""
    from evalsvc.demo import DEMO_RUN
    from evalsvc.demo_truth import best_set_check
    from evalsvc.scoring.results import AnalysisConfig
    from evalsvc.store import open_store

    root, out = full_demo
    with open_store(root, read_only=True) as store:
        for ema in (False, True):
            check = best_set_check(store, DEMO_RUN, AnalysisConfig(primary="clip_t", ema=ema))
            assert check.inside, check
            assert check.recommended.series == DEMO_RUN and check.recommended.ema == ema
            # the oracle's best is clearly better than the base's epoch-1 start, so the set is not everything
            assert len(check.best_set) < 8 + (not ema) * 2
    series = [line for line in out.splitlines() if line.startswith(("raw:", "EMA:"))]
    assert len(series) == 2 and all("inside the oracle's best set" in line for line in series)


def test_full_demo_flags_the_overcooked_lora_and_ranks_the_variants_as_the_oracle_does(full_demo):
    from evalsvc.demo import DEMO_RUN
    from evalsvc.demo_truth import best_set_check, pair_orders
    from evalsvc.demo_variants import MEMORISED, OVERCOOKED
    from evalsvc.scoring.results import AnalysisConfig, run_recommendation
    from evalsvc.store import open_store

    root, _ = full_demo
    with open_store(root, read_only=True) as store:
        verdicts = {v.name: v for v in run_recommendation(store, DEMO_RUN, AnalysisConfig(ema=False)).verdicts}
        overcooked, memorised = _variant(store, OVERCOOKED), _variant(store, MEMORISED)
        assert verdicts[overcooked.file_name].status == "excluded"
        assert "overcooked" in verdicts[overcooked.file_name].reason
        # no checkpoint of the good run is flagged
        assert not [v for v in verdicts.values() if v.status == "excluded" and v.name != overcooked.file_name]
        from evalsvc.report.model import ReportConfig, gather_report, report_json

        listed = {c["name"]: c for c in report_json(gather_report(store, DEMO_RUN, ReportConfig()))["checkpoints"]}
        assert listed[overcooked.file_name]["flags"] == ["overcooked"]
        (evidence,) = listed[overcooked.file_name]["flag_evidence"]
        assert evidence["metric"] == "overcook" and evidence["value"] > evidence["threshold"]
        assert not [name for name, c in listed.items() if c["flags"] and name != overcooked.file_name]
        recommended = best_set_check(store, DEMO_RUN, AnalysisConfig(ema=False)).recommended
        names = [recommended.file_name, "purple-000001.safetensors", overcooked.file_name, memorised.file_name]
        orders = pair_orders(store, DEMO_RUN, names, "clip_t", AnalysisConfig())
    decided = [o for o in orders if o.agrees is not None]
    # measured: the oracle separates 5 of the 6 pairs (not the recommended epoch vs the memorised LoRA)
    assert len(decided) >= 4, orders
    assert all(o.agrees for o in decided), [o for o in decided if not o.agrees]


@pytest.mark.xfail(strict=True, reason="the toy world's 'memorised' LoRA (3 images, 60 epochs) does not copy its "
                   "training images: its nearest-training-image similarity stays below the training set's own "
                   "near-duplicate level, even when prompted with its own training captions, so the memorisation "
                   "flag rightly stays off; see README 'Known limits' and issue 4's notes")
def test_full_demo_flags_the_memorised_lora(full_demo):
    from evalsvc.demo import DEMO_RUN
    from evalsvc.demo_variants import MEMORISED
    from evalsvc.scoring.results import AnalysisConfig, run_recommendation
    from evalsvc.store import open_store

    root, _ = full_demo
    with open_store(root, read_only=True) as store:
        memorised = _variant(store, MEMORISED)
        verdicts = {v.name: v for v in run_recommendation(store, DEMO_RUN, AnalysisConfig(ema=False)).verdicts}
    assert verdicts[memorised.file_name].status == "excluded"


def test_full_demo_prints_best_settings_and_portability_beside_the_oracle(full_demo):
    """The settings sweep (2 CFG x 2 steps x 2 strengths on the purple prompts) and the second, dark base."""
    from evalsvc.demo import DEMO_RUN
    from evalsvc.demo_settings import DARK_BASE, PORTABILITY_RUN, SETTINGS_RUN
    from evalsvc.report import ReportConfig, gather_report
    from evalsvc.scoring.results import AnalysisConfig, run_recommendation
    from evalsvc.stats.judge import Judge
    from evalsvc.store import open_store

    root, out = full_demo
    assert "each checkpoint's best setting by clip_t on purple prompts (of 8 settings)" in out
    assert "recommended (each checkpoint at its own best setting): purple-" in out
    dark = f"{DARK_BASE}.safetensors"
    assert "on toy-sd15: recommended purple-" in out and f"on {dark}: recommended purple-" in out
    with open_store(root, read_only=True) as store:
        sweep = gather_report(store, SETTINGS_RUN, ReportConfig(strip_images=0))
        assert len(sweep.settings) == 8 and all(r.runner_up is not None for r in sweep.rows)
        matrix = gather_report(store, PORTABILITY_RUN, ReportConfig(strip_images=0)).portability[0]
        assert matrix.axis == "base" and matrix.columns == ("toy-sd15", dark)
        epochs = [name for name, cells in matrix.rows if name.startswith("purple-")]
        assert len(epochs) == 8 and all(len(cells) == 2 for name, cells in matrix.rows if name in epochs)
        # on the base it was trained on, the portability run judges the main run's own images (sampled once)
        main = {r.info.file_name: r.metrics["clip_t"].mean for r in gather_report(
            store, DEMO_RUN, ReportConfig(strip_images=0)).rows}
        assert all(cells["toy-sd15"].estimate.mean == pytest.approx(main[name]) for name, cells in matrix.rows
                   if name in epochs)
        here = run_recommendation(store, PORTABILITY_RUN, AnalysisConfig(judge=Judge.parse("at:base=toy-sd15")))
        assert here.setting.base == next(r.info.sha256 for r in gather_report(
            store, PORTABILITY_RUN, ReportConfig(strip_images=0)).rows if r.info.file_name == "toy-sd15")
