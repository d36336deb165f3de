"""`evalsvc audit`: nearest training images of one image, and the training images a checkpoint's outputs come back
to more often than the base's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalsvc.cli import main


def _images(store_root, run):
    from evalsvc.scoring.cells import run_cells
    from evalsvc.store import open_store

    with open_store(store_root, read_only=True) as store:
        return run_cells(store, run)


def test_audit_names_the_training_image_a_checkpoint_keeps_coming_back_to(short_demo, copy_store, tmp_path, capsys):
    """A reference set of the base's own images plus one image of the last epoch: that epoch's outputs come back to
    that one image more often than the base's do (those have their own copies), and an image of it finds its copy
    first, at similarity 1."""
    from evalsvc.demo import DEMO_RUN

    root = copy_store(short_demo[0])
    cells = _images(root, DEMO_RUN)
    candidate = max((c for c in cells if not c.is_base), key=lambda c: (c.epoch or 0, c.file_name)).file_name
    own = [c for c in cells if c.file_name == candidate]
    reference = tmp_path / "train"
    reference.mkdir()
    for c in {c.image_sha256: c for c in cells if c.is_base}.values():
        shutil.copy(c.image_path, reference / f"base-{c.image_sha256[:12]}.png")
    planted = reference / "planted.png"
    shutil.copy(own[0].image_path, planted)

    assert main(["audit", "--store", str(root), "--run", DEMO_RUN, "--checkpoint", candidate, "--reference",
                 str(reference), "--backbone", "toy", "--top", "1000", "--json", "--no-progress"]) == 0
    (audited,) = json.loads(capsys.readouterr().out)["checkpoints"]
    assert audited["checkpoint"] == candidate and audited["images"] == len(own)
    listed = {Path(a["file"]).name: a for a in audited["over_represented"]}
    assert listed["planted.png"]["count"] >= 1 and listed["planted.png"]["base_count"] == 0  # no base image's nearest
    assert sum(a["count"] for a in listed.values()) <= len(own)
    lifts = [a["lift"] for a in audited["over_represented"]]
    assert lifts == sorted(lifts, reverse=True) and all(lift > 0 for lift in lifts)

    assert main(["audit", "--store", str(root), "--run", DEMO_RUN, "--image", own[0].key, "--reference", str(reference),
                 "--backbone", "toy", "--top", "2", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"image {own[0].key} ({candidate}, seed {own[0].seed}")
    assert lines[1].startswith("  1. planted.png  similarity 1.000") and len(lines) == 3


def test_the_image_behind_a_planted_defect_is_the_most_over_represented():
    """Four training images; the base's outputs come back to each once, the checkpoint's three times out of four to
    the fourth (the defective one it learned) and once to the first (as often as the base: not listed)."""
    from evalsvc.scoring.audit import over_represented

    reference = np.eye(4, dtype=np.float32)
    files = [Path(f"train/{i}.png") for i in range(4)]
    base = np.eye(4, dtype=np.float32) * 0.9 + 0.02
    own = np.array([[0.1, 0, 0, 0.9], [0, 0.2, 0, 0.8], [0.1, 0.1, 0.1, 0.7], [0.9, 0, 0.1, 0]], dtype=np.float32)
    (top,) = over_represented(own, base, files, reference)
    assert (top.file, top.count, top.images, top.base_count, top.base_images) == (files[3], 3, 4, 1, 4)
    assert top.lift == pytest.approx(0.5) and top.similarity == pytest.approx(0.8)
    assert over_represented(own, None, files, reference)[0].file == files[3]  # no base images: shares alone


def test_audit_refuses_an_unknown_checkpoint_image_or_run(short_demo, copy_store, tmp_path, capsys):
    from evalsvc.demo import DEMO_RUN

    root = copy_store(short_demo[0])
    reference = tmp_path / "train"
    reference.mkdir()
    shutil.copy(next(c for c in _images(root, DEMO_RUN)).image_path, reference / "a.png")
    common = ["--store", str(root), "--reference", str(reference), "--backbone", "toy", "--no-progress"]
    assert main(["audit", "--run", DEMO_RUN, "--checkpoint", "nope.safetensors", *common]) != 0
    assert "has no sampled candidate 'nope.safetensors'" in capsys.readouterr().err
    assert main(["audit", "--run", DEMO_RUN, "--image", "missing.png", *common]) != 0
    assert "--image missing.png: not a cell key or image file" in capsys.readouterr().err
    assert main(["audit", "--run", "nosuch", *common]) != 0
    assert "no run named 'nosuch'" in capsys.readouterr().err
