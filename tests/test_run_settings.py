"""A run remembers what it was scored with: later scoring without options uses the same backbone and
training images, other training images recompute the values that depend on them, and a vanished
reference folder is a clear error."""

from __future__ import annotations

import shutil

from evalsvc.cli import main
from evalsvc.store import open_store

REFERENCE_METRICS = "clip_i,nearest_train"


def _values(root, metric):
    with open_store(root, read_only=True) as store:
        return dict(store.db.execute("SELECT key, value FROM scores WHERE metric = ?", [metric]).fetchall())


def _score(root, *options):
    return main(["score", "--store", str(root), "--run", "purple", "--no-progress", "--metrics", REFERENCE_METRICS,
                 *options])


def test_scoring_without_options_reuses_the_runs_backbone_and_reference(short_demo, copy_store, capsys):
    root = copy_store(short_demo[0])
    before = _values(root, "clip_i")
    assert before  # the demo scored clip_i with the toy CLIP against its purple images
    with open_store(root) as store:
        store.db.execute("DELETE FROM scores WHERE metric IN ('clip_i', 'nearest_train')")
    assert _score(root) == 0
    out = capsys.readouterr().out
    assert "scoring with its last settings: backbone ToyCLIP-ViT-T8, reference " in out
    assert "purple-data" in out and "skipped" not in out
    assert _values(root, "clip_i") == before


def test_other_training_images_recompute_the_values_that_depend_on_them(short_demo, copy_store, tmp_path, capsys):
    root = copy_store(short_demo[0])
    before, clip_t = _values(root, "clip_i"), _values(root, "clip_t")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for image in sorted((short_demo[0] / "demo-models" / "purple-data").rglob("*.png"))[:5]:
        shutil.copy(image, fewer / image.name)
    assert main(["score", "--store", str(root), "--run", "purple", "--no-progress", "--reference", str(fewer)]) == 0
    out = capsys.readouterr().out
    n = len(before)  # clip_t needs no training images; clip_i, identity and nearest_train read them
    assert f"clip_t 0, clip_i {n}, identity {n}, nearest_train {n}" in out
    after = _values(root, "clip_i")
    assert after.keys() == before.keys() and after != before
    assert _values(root, "clip_t") == clip_t
    # the run now remembers the new folder
    assert _score(root) == 0
    assert f"reference {fewer}" in capsys.readouterr().out
    assert _values(root, "clip_i") == after


def test_a_vanished_reference_folder_is_a_clear_error(short_demo, copy_store, tmp_path, capsys):
    root = copy_store(short_demo[0])
    gone = tmp_path / "gone"
    shutil.copytree(short_demo[0] / "demo-models" / "purple-data", gone)
    assert main(["score", "--store", str(root), "--run", "purple", "--no-progress", "--reference", str(gone),
                 "--metrics", "clip_i"]) == 0
    kept = _values(root, "clip_i")
    shutil.rmtree(gone)
    capsys.readouterr()
    assert _score(root) != 0
    err = capsys.readouterr().err
    assert f"run 'purple' was last scored against the reference images in {gone}" in err and "--reference" in err
    assert _values(root, "clip_i") == kept
