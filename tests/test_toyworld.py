"""The toy world: drawing, captions, the dataset writer and the pixel oracle."""

import random

import numpy as np
import pytest
from PIL import Image

from trainer.toyworld.oracle import judge, parse_caption, perceive
from trainer.toyworld.world import (HELD_OUT_COLOUR, KNOWN_COLOURS, Scene, all_scenes, draw, sample_scenes,
                                    write_dataset)


def test_the_oracle_reads_every_drawn_scene_back():
    rng = random.Random(7)
    for scene in all_scenes():
        for _ in range(2):
            seen = perceive(draw(scene, rng))
            assert (seen.colour, seen.shape, seen.position, seen.background) == (
                scene.colour, scene.shape, scene.position, scene.background), scene


def test_judge_scores_each_attribute_of_the_caption():
    image = draw(Scene("red", "circle", "left", "white"), random.Random(0))
    assert judge(image, "a red circle on the left, white background").score == 1.0
    wrong = judge(image, "a blue circle on the right, white background")
    assert wrong.matches == {"colour": False, "shape": True, "position": False, "background": True}
    assert wrong.score == 0.5
    assert judge(image, "a red square").matches == {"colour": True, "shape": False}


def test_blank_and_noise_images_show_no_object():
    blank = Image.new("RGB", (64, 64), (240, 240, 240))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for image in (blank, noise):
        seen = perceive(image)
        assert (seen.colour, seen.shape, seen.position) == (None, None, None)
        assert judge(image, "a purple circle in the center").score == 0.0


def test_captions_parse_into_attributes():
    assert parse_caption("a purple triangle at the top, gray background") == {
        "colour": "purple", "shape": "triangle", "position": "top", "background": "gray"}
    assert parse_caption("A Green Square in the center") == {"colour": "green", "shape": "square", "position": "center"}
    with pytest.raises(ValueError, match="names no toy-world attribute"):
        judge(Image.new("RGB", (64, 64)), "a portrait of a woman")
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        Scene("pink", "circle", "left", "white")


def test_dataset_is_kohya_layout_balanced_and_without_the_held_out_colour(tmp_path):
    root = write_dataset(tmp_path / "data", 360, seed=3)
    images = sorted((root / "1_toyworld").glob("*.png"))
    captions = [p.with_suffix(".txt").read_text().strip() for p in images]
    assert len(images) == 360 and all(Image.open(p).size == (64, 64) for p in images[:5])
    assert not any(HELD_OUT_COLOUR in c for c in captions)
    assert len(set(captions)) == len(all_scenes(KNOWN_COLOURS)) == 180  # every known scene, twice
    assert sample_scenes(360, seed=3) == sample_scenes(360, seed=3) != sample_scenes(360, seed=4)
    first = perceive(Image.open(images[0]))
    assert judge(Image.open(images[0]), captions[0]).correct, (first, captions[0])
