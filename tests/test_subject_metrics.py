"""The character's likeness (identity on the subject cut out) and diversity across seeds by SSIM."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from evalsvc.scoring.subject import NEUTRAL, subject_view
from trainer.toyworld.world import LOOK_V2, Scene, character_scene, random_detail, render


def _pixels(image):
    return np.asarray(image, dtype=np.float64)


def test_the_subject_view_ignores_place_size_background_and_props():
    rng = random.Random(0)
    left = render(character_scene("left", "gray"), random_detail(character_scene("left", "gray"), rng, LOOK_V2))
    right_detail = random_detail(character_scene("right", "white"), rng, LOOK_V2)
    right = render(character_scene("right", "white"), replace(right_detail, half=right_detail.half * 1.3))
    raw = np.abs(_pixels(left) - _pixels(right)).mean()
    cut = np.abs(_pixels(subject_view(left)) - _pixels(subject_view(right))).mean()
    assert cut < raw / 3, (cut, raw)  # measured about 10 against 60
    view = _pixels(subject_view(left))
    assert (np.abs(view[0] - NEUTRAL).max(axis=1) < 2).all()  # background painted over, marker gone
    other = Scene("blue", "square", "left", "gray")
    assert np.abs(_pixels(subject_view(render(other, random_detail(other, rng, LOOK_V2)))) - view).mean() > 2 * cut


def test_a_busy_background_keeps_the_whole_image():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert np.array_equal(_pixels(subject_view(noise)), _pixels(noise))
    blank = Image.new("RGB", (64, 64), (200, 10, 10))
    assert np.array_equal(_pixels(subject_view(blank)), _pixels(blank))


def test_diversity_ssim_is_one_minus_the_mean_pairwise_ssim_of_a_prompts_seeds(tmp_path):
    from torchmetrics.functional.image import structural_similarity_index_measure
    import torch

    from evalsvc.scoring.cells import ScoredCell
    from evalsvc.scoring.set_scorers import DiversitySsim
    from evalsvc.setting import Setting

    setting = Setting(cfg=5.0, steps=20, sampler="euler", size=(64, 64))
    rng = random.Random(3)
    scene = Scene("red", "circle", "left", "white")
    cells, images = [], {"varied": [], "same": []}
    for prompt in ("varied", "same"):
        for seed in range(3):
            detail = random_detail(scene, rng if prompt == "varied" else random.Random(1), LOOK_V2)
            path = tmp_path / f"{prompt}-{seed}.png"
            render(scene, detail).save(path)
            images[prompt].append(torch.from_numpy(_pixels(Image.open(path)) / 255).permute(2, 0, 1).float())
            cells.append(ScoredCell(f"{prompt}{seed}", "sha", "lora.safetensors", "candidate", 1, False, prompt,
                                    scene.caption, "holdout", (), seed, setting, 5.0, path, f"img-{prompt}-{seed}"))
    rows = {row.prompt_id: row for row in DiversitySsim().compute(None, cells)}
    assert rows["same"].value == pytest.approx(0.0, abs=5e-3)  # one picture three times (float32 SSIM: not exactly 1)
    stack = torch.stack(images["varied"])
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = 1 - np.mean([float(structural_similarity_index_measure(stack[[i]], stack[[j]], data_range=1.0))
                            for i, j in pairs])
    assert rows["varied"].value == pytest.approx(expected, abs=1e-5) and rows["varied"].value > 0.05
    assert rows["varied"].n == 3
