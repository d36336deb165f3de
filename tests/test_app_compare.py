"""The app's enlarge, compare and curves views over the shortened demo run (base + 2 epochs x raw/EMA, 15 prompts,
seed 1, CFG 5), checked against the stored rows they come from."""

import numpy as np
import pytest

from evalsvc.app.cell import cell_details, cell_html
from evalsvc.app.compare import CompareRequest, compare, compare_choices, comparison_html, delta_rows
from evalsvc.app.curves import (curves_html, decision_markdown, details_markdown, forest_html, gather_curves,
                                recommendation_markdown)
from evalsvc.app.view import primary_metric
from evalsvc.errors import InputError
from evalsvc.stats import BootstrapConfig
from evalsvc.store import open_store

FAST = BootstrapConfig(resamples=200)
BASE, EPOCH1, EPOCH2 = "toy-sd15", "purple-000001.safetensors", "purple-000002.safetensors"
PROMPT = "purple-circle-left-white"


@pytest.fixture
def view(short_demo):
    with open_store(short_demo[0], read_only=True) as store:
        yield store


def _stored(db, checkpoint: str, cfg: float = 5.0, prompt: str = PROMPT, seed: int = 1):
    """{metric: value} of the sample of (checkpoint, prompt, seed, cfg), read straight from the tables."""
    rows = db.execute("SELECT s.metric, s.value FROM scores s JOIN work w ON w.key = s.key JOIN grid_cells g "
                      "ON g.key = s.key JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE c.file_name = ? "
                      "AND g.prompt_id = ? AND w.seed = ? AND w.cfg = ?", [checkpoint, prompt, seed, cfg]).fetchall()
    return dict(rows)


def test_enlarged_cell_shows_what_made_the_image_and_its_stored_scores(view):
    key, seed, cfg, prompt, infotext = view.db.execute(
        "SELECT w.key, w.seed, w.cfg, w.prompt, s.infotext FROM work w JOIN samples s ON s.key = w.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN grid_cells g ON g.key = w.key "
        "WHERE c.file_name = 'purple-ema-000002.safetensors' AND g.prompt_id = ?", [PROMPT]).fetchone()
    details = cell_details(view.db, "purple", key)
    assert (details.spec.seed, details.spec.cfg, details.spec.prompt, details.prompt_id) == (seed, cfg, prompt, PROMPT)
    assert (details.checkpoint, details.weights, details.epoch) == ("purple-ema-000002.safetensors", "EMA", 2)
    assert details.infotext == infotext and f"Seed: {seed}" in infotext and details.spec.steps == 10
    stored = dict(view.db.execute("SELECT metric, value FROM scores WHERE key = ?", [key]).fetchall())
    assert {s.metric: s.value for s in details.scores} == pytest.approx(stored) and "clip_t" in stored
    assert [s.metric for s in details.scores][0] == "clip_t"  # registry order
    html = cell_html(details)
    assert f'src="/image/{details.image}"' in html and f"{stored['clip_t']:.4g}" in html and "Seed: 1" in html
    with pytest.raises(InputError, match="no sampled image"):
        cell_details(view.db, "purple", "0" * 64)


def test_enlarged_cell_lists_its_nearest_training_images_from_the_stored_embeddings(view):
    """The demo run was scored against its training images: the nearest one's similarity is the image's own
    stored nearest_train score, and the app computes it from cached embeddings without a backbone."""
    from evalsvc.scoring.audit import TrainingNeighbours

    key = view.db.execute("SELECT w.key FROM work w JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN grid_cells g "
                          "ON g.key = w.key WHERE c.file_name = ? AND g.prompt_id = ?", [EPOCH2, PROMPT]).fetchone()[0]
    neighbours = TrainingNeighbours()
    details = cell_details(view.db, "purple", key, neighbours)
    stored = dict(view.db.execute("SELECT metric, value FROM scores WHERE key = ?", [key]).fetchall())
    assert len(details.neighbours) == 3 and details.neighbours_note == ""
    assert details.neighbours[0].similarity == pytest.approx(stored["nearest_train"], abs=1e-5)
    similarities = [n.similarity for n in details.neighbours]
    assert similarities == sorted(similarities, reverse=True)
    html = cell_html(details)
    top = details.neighbours[0].file
    assert "nearest training images" in html and f"{top.parent.name}/{top.name}" in html
    assert cell_details(view.db, "purple", key, neighbours).neighbours == details.neighbours  # from the cache
    assert cell_details(view.db, "purple", key).neighbours == ()  # not asked for


def test_compare_at_one_cfg_gives_stored_deltas_and_the_paired_mean(view):
    result = compare(view, CompareRequest("purple", BASE, EPOCH2, PROMPT, 1, setting="cfg=5", bootstrap=FAST))
    a, b = _stored(view.db, BASE), _stored(view.db, EPOCH2)
    deltas = {m.metric: m for m in result.metrics}
    assert set(deltas) >= {"clip_t", "clip_i", "oracle"} and "drift" not in deltas  # the base has no drift
    for metric, m in deltas.items():
        assert (m.a, m.b) == pytest.approx((a.get(metric), b.get(metric)))
        if metric in a and metric in b:
            assert m.delta == pytest.approx(b[metric] - a[metric])
    # clip_t pairs on the target prompts only: an independent mean of B - A over them
    target = [p for p, in view.db.execute("SELECT prompt_id FROM prompts WHERE role = 'target'").fetchall()]
    differences = [_stored(view.db, EPOCH2, prompt=p)["clip_t"] - _stored(view.db, BASE, prompt=p)["clip_t"]
                   for p in target]
    clip_t = deltas["clip_t"].paired
    assert clip_t.n == len(target) == 9 and deltas["clip_t"].prompts == "target"
    assert clip_t.mean == pytest.approx(np.mean(differences)) and clip_t.ci_low <= clip_t.mean <= clip_t.ci_high
    assert deltas["clip_i"].paired.n == 15  # every prompt
    row = next(r for r in delta_rows(result) if r[0] == "clip_t ↑")
    assert float(row[3]) == pytest.approx(b["clip_t"] - a["clip_t"], rel=1e-3)
    html = comparison_html(result)
    assert f"/image/{result.a.image}" in html and f"/image/{result.b.image}" in html and 'type="range"' in html


def test_best_setting_is_each_checkpoints_argmax_of_stored_means(short_demo, copy_store):
    """A second CFG (7) is added for every image: epoch 1's clip_t rises there, the base's falls, so epoch 1 is
    compared at 7 and the base at 5, whatever the request's (absent) setting; each shown score is its image's."""
    with open_store(copy_store(short_demo[0])) as store:
        db = store.db
        db.execute("CREATE TEMP TABLE shift AS SELECT c.sha256, CASE c.file_name WHEN ? THEN 0.3 ELSE -0.3 END AS d "
                   "FROM checkpoints c", [EPOCH1])
        db.execute("INSERT INTO work SELECT * REPLACE (key || '-7' AS key, 7.0 AS cfg) FROM work")
        db.execute("INSERT INTO grid_cells SELECT * REPLACE (key || '-7' AS key, replace(setting, '\"cfg\":5.0', "
                   "'\"cfg\":7.0') AS setting) FROM grid_cells")
        db.execute("INSERT INTO samples SELECT * REPLACE (key || '-7' AS key) FROM samples")
        db.execute("INSERT INTO scores SELECT s.* REPLACE (s.key || '-7' AS key, CASE s.metric WHEN 'clip_t' "
                   "THEN s.value + f.d ELSE s.value END AS value) FROM scores s JOIN work w ON w.key = s.key "
                   "JOIN shift f ON f.sha256 = w.checkpoint")
        view = store
        means = dict(((name, cfg), mean) for name, cfg, mean in db.execute(
            "SELECT c.file_name, w.cfg, avg(s.value) FROM scores s JOIN work w ON w.key = s.key JOIN grid_cells g "
            "ON g.key = s.key JOIN prompts p ON p.prompt_id = g.prompt_id AND p.suite_hash = g.suite_hash "
            "JOIN checkpoints c ON c.sha256 = w.checkpoint WHERE s.metric = 'clip_t' AND p.role = 'target' "
            "GROUP BY ALL").fetchall())
        result = compare(view, CompareRequest("purple", BASE, EPOCH1, PROMPT, 1, bootstrap=FAST))
        for side in (result.a, result.b):
            assert side.setting.cfg == max((5.0, 7.0), key=lambda cfg: means[(side.checkpoint, cfg)])
        assert (result.a.setting.cfg, result.b.setting.cfg) == (5.0, 7.0) and result.best_setting
        assert result.primary == "clip_t" and (result.a.where, result.b.where) == ("CFG 5", "CFG 7")
        for side, key in ((result.a, "a"), (result.b, "b")):  # every score shown is the shown image's own
            own = dict(db.execute("SELECT metric, value FROM scores WHERE key = ?", [side.key]).fetchall())
            shown = {m.metric: getattr(m, key) for m in result.metrics if getattr(m, key) is not None}
            assert shown == pytest.approx(own)
        a7 = db.execute("SELECT value FROM scores WHERE key = ? AND metric = 'clip_t'", [result.b.key]).fetchone()[0]
        assert result.b.key.endswith("-7") and dict((m.metric, m.b) for m in result.metrics)["clip_t"] == a7
        fixed = compare(view, CompareRequest("purple", BASE, EPOCH1, PROMPT, 1, setting="cfg=7", bootstrap=FAST))
        assert (fixed.a.setting.cfg, fixed.b.setting.cfg) == (7.0, 7.0) and not fixed.best_setting
        assert compare_choices(view, "purple").settings == ("cfg=5", "cfg=7")


def test_bad_comparisons_are_refused(view):
    for request, message in ((dict(b=BASE), "two different checkpoints"), (dict(a="nope.safetensors"), "no checkpoint"),
                             (dict(seed=99), "no sampled image"),
                             (dict(setting="cfg=9"), "cfg=9 was never sampled; cfg values that exist: 5"),
                             (dict(setting="steps"), "expected AXIS=VALUE")):
        args = {"run": "purple", "a": BASE, "b": EPOCH1, "prompt": PROMPT, "seed": 1, **request}
        with pytest.raises(InputError, match=message):
            compare(view, CompareRequest(**args))
    choices = compare_choices(view, "purple")
    assert choices.checkpoints[0] == BASE and len(choices.checkpoints) == 5 and len(choices.prompts) == 15
    assert (choices.default_a, choices.default_b, choices.seeds) == (BASE, EPOCH2, (1,))


def test_compare_starts_with_the_base_against_the_main_series_latest_epoch_not_a_side_lora(full_demo):
    """The demo run also holds an overcooked (epoch 4) and a memorised (epoch 60) LoRA of their own series."""
    with open_store(full_demo[0], read_only=True) as store:
        choices = compare_choices(store, "purple")
    assert (choices.default_a, choices.default_b) == (BASE, "purple-000008.safetensors")


def test_curves_carry_the_recommendation_every_metric_and_the_latest_decision(short_demo, copy_store):
    from evalsvc.decisions import mark_release_candidate
    from evalsvc.scoring.results import AnalysisConfig, run_recommendation

    with open_store(copy_store(short_demo[0])) as store:
        view = store
        assert primary_metric(view, "purple") == "clip_t" and primary_metric(view, "purple", "pickscore") == "clip_t"
        curves = gather_curves(view, "purple")
        assert curves.decision is None and "No release decision" in decision_markdown(curves.decision)
        expected = run_recommendation(store, "purple", AnalysisConfig(primary="clip_t", prompt_role="target"))
        text = recommendation_markdown(curves.report)
        assert f"**{expected.checkpoint}**" in text.splitlines()[0] and len(text.splitlines()) == 3
        details = details_markdown(curves.report)
        assert "Among EMA weights only" in details and all(f"- {r}" in details for r in expected.reasons)
        forest = forest_html(curves.report)
        assert forest.count("<svg") == 1 and "each candidate against the best" in forest
        html = curves_html(curves.report)
        assert html.count("<svg") == len(curves.report.metrics) >= 5 and 'data-metric="clip_t"' in html
        assert html.index('data-metric="clip_t"') < html.index('data-metric="clip_i"')  # the primary first
        assert "training loss" in html  # the loss beside the primary's plot
        mark_release_candidate(store.db, "purple", EPOCH1, "ann", "first pick")
        mark_release_candidate(store.db, "purple", EPOCH2, "bob", "sharper circles")
        latest = decision_markdown(gather_curves(view, "purple").decision)
        assert EPOCH2 in latest and "bob" in latest and "sharper circles" in latest and EPOCH1 not in latest
        with pytest.raises(InputError, match="no run named"):
            gather_curves(view, "nope")
