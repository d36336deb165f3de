"""`evalsvc score` on the shortened demo run: stored values match an independent computation,
scoring resumes, a changed backbone recomputes, and missing weights skip a scorer with one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evalsvc.errors import InputError
from evalsvc.scoring.backbone import BackboneSpec
from evalsvc.scoring.clip_scores import remove_trigger
from evalsvc.scoring.registry import ScoreConfig, scorer_registry
from evalsvc.scoring.runner import score_run
from evalsvc.store import open_store


@pytest.fixture
def scored(short_demo, copy_store):
    root = copy_store(short_demo[0])
    config = ScoreConfig(backbone=BackboneSpec.toy(), reference=root / "demo-models" / "purple-data", progress=False)
    with open_store(root) as store:
        report = score_run(store, "purple", config)
    return root, config, report


def _values(store, metric):
    return dict(store.db.execute("SELECT key, value FROM scores WHERE metric = ?", [metric]).fetchall())


def test_every_scorer_declares_what_it_is():
    for name, scorer in scorer_registry().items():
        assert scorer.name == name and scorer.version and isinstance(scorer.higher_is_better, bool)
        assert scorer.level in ("image", "set") and scorer.description


def test_clip_scores_match_open_clip_directly(scored):
    import open_clip

    from evalsvc.scoring.cells import run_cells
    from evalsvc.toy.clip import TOY_CLIP_NAME, register_toy_clip, toy_clip_weights

    root, config, report = scored
    register_toy_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(TOY_CLIP_NAME, pretrained=str(toy_clip_weights()))
    tokenizer = open_clip.get_tokenizer(TOY_CLIP_NAME)
    references = sorted(config.reference.rglob("*.png"))
    with torch.no_grad():
        ref = model.encode_image(torch.stack([preprocess(Image.open(p)) for p in references]))
        ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    with open_store(root, read_only=True) as store:
        everything = run_cells(store, "purple")
        clip_t, clip_i, nearest = (_values(store, m) for m in ("clip_t", "clip_i", "nearest_train"))
    cells = everything[::7]
    assert len(clip_t) == len(clip_i) == len(everything) > 0
    for cell in cells:
        with torch.no_grad():
            image = model.encode_image(preprocess(Image.open(cell.image_path)).unsqueeze(0))[0].numpy()
            text = model.encode_text(tokenizer([cell.prompt]))[0].numpy()
        image /= np.linalg.norm(image)
        assert clip_t[cell.key] == pytest.approx(float(image @ text / np.linalg.norm(text)), abs=1e-4)
        assert clip_i[cell.key] == pytest.approx(float((ref @ image).mean()), abs=1e-4)
        assert nearest[cell.key] == pytest.approx(float((ref @ image).max()), abs=1e-4)


def test_scoring_resumes_and_a_new_backbone_recomputes(scored, tmp_path):
    from evalsvc.toy.clip import toy_clip_weights

    root, config, _ = scored
    with open_store(root) as store:
        before = store.db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        again = score_run(store, "purple", config)
        assert set(again.computed.values()) == {0}
        assert store.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == before
        # The same weights under another file are another backbone id only if the content differs.
        copy = tmp_path / "same.safetensors"
        copy.write_bytes(toy_clip_weights().read_bytes())
        same = ScoreConfig(metrics=("clip_t",), backbone=BackboneSpec(config.backbone.model, str(copy)),
                           progress=False)
        assert score_run(store, "purple", same).computed == {"clip_t": 0}
        other = tmp_path / "other.safetensors"
        from safetensors.torch import load_file, save_file

        weights = load_file(str(toy_clip_weights()))
        weights["ln_final.bias"] = weights["ln_final.bias"] + 0.5
        save_file(weights, str(other))
        changed = ScoreConfig(metrics=("clip_t",), backbone=BackboneSpec(config.backbone.model, str(other)),
                              progress=False)
        cells = store.db.execute("SELECT count(*) FROM scores WHERE metric = 'clip_t'").fetchone()[0]
        assert score_run(store, "purple", changed).computed == {"clip_t": cells}


def test_missing_weights_skip_the_scorer_with_one_line(short_demo, copy_store, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    root = copy_store(short_demo[0])
    with open_store(root) as store:
        store.db.execute("DELETE FROM scores")  # the demo scored with the toy CLIP already
        default = BackboneSpec()  # OpenAI's ViT-L/14, not in the (empty) cache
        report = score_run(store, "purple", ScoreConfig(metrics=("clip_t", "oracle"), backbone=default, progress=False))
        assert report.computed == {"oracle": store.db.execute("SELECT count(*) FROM scores").fetchone()[0]}
        assert store.db.execute("SELECT count(*) FROM scores WHERE metric = 'clip_t'").fetchone()[0] == 0
    [line] = report.skipped
    assert line.startswith("clip_t skipped:") and "ViT-L-14-quickgelu" in line and "\n" not in line


def test_sample_with_score_scores_after_sampling(short_demo, copy_store, capsys):
    """`evalsvc sample --score` is `evalsvc score` run after the sampling pass, with the same options."""
    from evalsvc.cli import main

    root = copy_store(short_demo[0])
    with open_store(root) as store:
        store.db.execute("DELETE FROM scores WHERE metric = 'overcook'")
        cells = store.db.execute("SELECT count(*) FROM scores WHERE metric = 'oracle'").fetchone()[0]
    assert main(["sample", "--store", str(root), "--run", "purple", "--no-progress", "--score",
                 "--metrics", "overcook", "--backbone", "toy"]) == 0
    out = capsys.readouterr().out
    assert "sampled 0 now" in out and f"values computed now: overcook {cells}" in out
    with open_store(root, read_only=True) as store:
        assert len(_values(store, "overcook")) == cells
    # without --score nothing is scored
    with open_store(root) as store:
        store.db.execute("DELETE FROM scores WHERE metric = 'overcook'")
    assert main(["sample", "--store", str(root), "--run", "purple", "--no-progress"]) == 0
    with open_store(root, read_only=True) as store:
        assert _values(store, "overcook") == {}


def test_oracle_scores_are_the_oracles_judgement(scored):
    from evalsvc.scoring.cells import run_cells
    from trainer.toyworld.oracle import judge

    root, _, _ = scored
    with open_store(root, read_only=True) as store:
        oracle = _values(store, "oracle")
        cells = run_cells(store, "purple")
    assert len(oracle) == len(cells)
    for cell in cells[::5]:
        assert oracle[cell.key] == judge(Image.open(cell.image_path), cell.prompt).score


def test_bad_requests_are_refused(short_demo, copy_store):
    root = copy_store(short_demo[0])
    with open_store(root) as store:
        with pytest.raises(InputError, match="unknown metric.*sharpness"):
            score_run(store, "purple", ScoreConfig(metrics=("clip_t", "sharpness")))
        with pytest.raises(InputError, match="no run named 'nope'"):
            score_run(store, "nope", ScoreConfig())
    report = None
    with open_store(root) as store:
        store.db.execute("DELETE FROM run_scoring")  # the demo's scoring left its reference images as the run's
        report = score_run(store, "purple", ScoreConfig(metrics=("clip_i",), backbone=BackboneSpec.toy()))
    assert report.skipped == ["clip_i skipped: it needs the training images (--reference DIR)"]


@pytest.mark.parametrize("prompt,trigger,expected", [
    ("zxc a purple circle", "zxc", "a purple circle"),
    ("a purple circle, zxc, white background", "zxc", "a purple circle, white background"),
    ("a ZXC circle", "zxc", "a circle"),
    ("zxcv circle", "zxc", "zxcv circle"),  # whole words only
])
def test_remove_trigger(prompt, trigger, expected):
    assert remove_trigger(prompt, trigger) == expected


def test_leaderboard_and_recommendation_read_the_stored_scores(scored):
    from evalsvc.scoring.results import AnalysisConfig, leaderboard, run_recommendation

    root, _, _ = scored
    with open_store(root, read_only=True) as store:
        rows = leaderboard(store, "purple", ["clip_t", "oracle"])
        stored = store.db.execute(
            "SELECT w.checkpoint, avg(s.value) FROM scores s JOIN work w ON w.key = s.key JOIN grid_cells g "
            "ON g.key = s.key JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id "
            "WHERE s.metric = 'clip_t' AND p.role = 'target' GROUP BY 1").fetchall()
        by_raw = run_recommendation(store, "purple", AnalysisConfig(ema=False))
        by_ema = run_recommendation(store, "purple", AnalysisConfig(ema=True, primary="oracle"))
    means = {r.checkpoint.sha256: r.estimate for r in rows if r.metric == "clip_t"}
    assert len(means) == 5  # base + 2 epochs x (raw, EMA)
    for sha, mean in stored:
        assert means[sha].mean == pytest.approx(mean)
        assert means[sha].ci_low <= mean <= means[sha].ci_high
    assert by_raw.checkpoint in ("purple-000001.safetensors", "purple-000002.safetensors")
    assert {v.name for v in by_raw.verdicts} == {"purple-000001.safetensors", "purple-000002.safetensors"}
    assert {v.name for v in by_ema.verdicts} == {"purple-ema-000001.safetensors", "purple-ema-000002.safetensors"}
    assert by_raw.reasons and by_ema.reasons


def _set_rows(store, metric):
    return store.db.execute("SELECT checkpoint, setting, prompt_id, value, n, std, details FROM set_scores "
                            "WHERE metric = ?", [metric]).fetchall()


def test_drift_is_one_minus_ssim_with_the_base_image_on_holdout_prompts(scored):
    from torchmetrics.functional.image import structural_similarity_index_measure

    from evalsvc.scoring.cells import run_cells

    root, _, _ = scored
    with open_store(root, read_only=True) as store:
        drift = _values(store, "drift")
        cells = run_cells(store, "purple")
    base = {(c.prompt_id, c.seed, c.cfg): c for c in cells if c.is_base}
    expected = [c for c in cells if c.prompt_role == "holdout" and not c.is_base]
    assert set(drift) == {c.key for c in expected}

    def tensor(path):
        return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)

    for cell in expected[::4]:
        twin = base[(cell.prompt_id, cell.seed, cell.cfg)]
        ssim = structural_similarity_index_measure(tensor(cell.image_path)[None], tensor(twin.image_path)[None],
                                                   data_range=1.0)
        assert drift[cell.key] == pytest.approx(1 - float(ssim), abs=1e-5)


def test_overcook_of_the_base_against_itself_averages_zero(scored):
    from evalsvc.scoring.cells import run_cells

    root, _, _ = scored
    with open_store(root, read_only=True) as store:
        overcook = _values(store, "overcook")
        cells = run_cells(store, "purple")
    assert set(overcook) == {c.key for c in cells}
    # one seed per prompt in the short demo: every prompt's reference is all base images together
    base = [overcook[c.key] for c in cells if c.is_base]
    assert sum(base) / len(base) == pytest.approx(0.0, abs=1e-9)


def test_diversity_and_kid_are_per_group_from_the_cached_embeddings(scored):
    from evalsvc.scoring.distribution import kid
    from evalsvc.toy.clip import toy_clip_weights

    root, config, _ = scored
    with open_store(root, read_only=True) as store:
        backbone = config.backbone.id
        vectors = {sha: np.asarray(v) for sha, v in store.db.execute(
            "SELECT image_sha256, vector FROM embeddings WHERE backbone = ?", [backbone]).fetchall()}
        members = store.db.execute(
            "SELECT w.checkpoint, g.setting, s.image_sha256 FROM grid_cells g JOIN work w ON w.key = g.key "
            "JOIN samples s ON s.key = g.key WHERE g.run = 'purple'").fetchall()
        kids = _set_rows(store, "kid")
        diversity = _set_rows(store, "diversity")
    assert toy_clip_weights().exists() and backbone.startswith("ToyCLIP")
    assert diversity == []  # the short demo samples one seed per prompt: nothing to compare across seeds
    groups: dict = {}
    for sha, setting, image in members:  # one group per checkpoint and setting
        groups.setdefault((sha, setting), []).append(vectors[image])
    reference = np.stack([vectors[sha] for sha in _reference_hashes(config.reference)])
    assert {(sha, setting) for sha, setting, *_ in kids} == set(groups)
    for sha, setting, prompt_id, value, n, std, details in kids:
        fake = np.stack(groups[(sha, setting)])
        assert prompt_id == "" and n == len(fake) and std is not None
        assert value == pytest.approx(kid(reference, fake)[0], abs=1e-9)
        assert '"torchmetrics"' in details and f'"n_real": {len(reference)}' in details


def _reference_hashes(folder):
    from evalsvc.scoring.reference import reference_images

    return list(reference_images(folder))
