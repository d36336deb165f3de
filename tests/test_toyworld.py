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


def _v2_pictures(count_per_scene: int, seed: int):
    """(scene, detail) for every scene of the world v2: every colour and style, and the character."""
    from dataclasses import replace

    from trainer.toyworld.world import COLOURS, LOOK_V2, STYLES, character_scenes, random_detail

    rng = random.Random(seed)
    scenes = all_scenes(tuple(COLOURS), STYLES) + character_scenes(STYLES)
    return [(scene, replace(detail, defect=bool(k % 2)))
            for scene in scenes for k in range(count_per_scene)
            for detail in [random_detail(scene, rng, LOOK_V2)]]


def test_the_oracle_reads_the_uncaptioned_detail_back():
    from trainer.toyworld.world import render

    for scene, detail in _v2_pictures(2, seed=5):
        seen = perceive(render(scene, detail))
        assert seen.scene_key == (scene.colour, scene.shape, scene.position, scene.background, scene.style,
                                  scene.character), (scene, detail, seen)
        assert seen.defect == detail.defect, (scene, detail, seen)
        mx, my, name = detail.marker
        assert seen.marker[2] == name and abs(seen.marker[0] - mx) < 0.02 and abs(seen.marker[1] - my) < 0.02
        assert abs(seen.centre[0] - detail.x) < 0.02 and abs(seen.half - detail.half) < 0.02, (scene, detail, seen)


def test_a_copy_is_one_picture_and_a_new_picture_of_its_caption_is_not():
    from trainer.toyworld.oracle import reproduced, same_picture
    from trainer.toyworld.world import LOOK_V2, render

    pictures = _v2_pictures(1, seed=6)[::7]
    training = [perceive(render(scene, detail)) for scene, detail in pictures]
    rng = random.Random(9)
    copies = [reproduced(render(scene, detail), training) for scene, detail in pictures]
    assert copies == list(range(len(pictures)))  # each picture is its own copy, and no other's
    fresh = [reproduced(draw(scene, rng, look=LOOK_V2), training) for scene, _ in pictures for _ in range(3)]
    assert sum(i is not None for i in fresh) <= 2, fresh  # new pictures of the same captions are new
    # one pixel of shift (the VAE's round trip is about that) is still the same picture
    scene, detail = pictures[0]
    shifted = Image.fromarray(np.roll(np.asarray(render(scene, detail)), 1, axis=1))
    assert same_picture(perceive(shifted), training[0])


def test_style_and_character_captions_are_judged_on_what_they_name():
    from trainer.toyworld.world import LOOK_V2, character_scene

    rng = random.Random(2)
    toki = draw(character_scene("left", "gray"), rng, look=LOOK_V2)
    assert parse_caption("a toki on the left, gray background, shaded") == {
        "character": True, "position": "left", "background": "gray", "style": "shaded"}
    assert judge(toki, "a toki on the left, gray background").correct
    assert judge(toki, "a toki on the left, gray background, shaded").matches["style"] is False
    plain_yellow = draw(Scene("yellow", "circle", "left", "gray"), rng, look=LOOK_V2)
    assert judge(plain_yellow, "a toki on the left, gray background").matches["character"] is False
    shaded = draw(Scene("red", "square", "top", "white", "shaded"), rng, look=LOOK_V2)
    assert judge(shaded, Scene("red", "square", "top", "white", "shaded").caption).correct
    assert perceive(shaded).style == "shaded" and perceive(plain_yellow).style == "plain"
    with pytest.raises(ValueError, match="the character 'toki' is a yellow circle"):
        Scene("red", "circle", "left", "white", character=True)


def test_a_dataset_spec_plants_its_defect_in_the_numbered_images_only(tmp_path):
    from trainer.toyworld.world import LOOK_V2, DatasetSpec, write_spec

    spec = DatasetSpec(12, seed=3, look=LOOK_V2, defects=(4,), repeats=2)
    folder = write_spec(tmp_path / "data", spec) / "2_toyworld"
    seen = [perceive(Image.open(folder / f"{i:05d}.png")) for i in range(12)]
    assert [p.defect for p in seen] == [i == 4 for i in range(12)]
    assert all(p.marker is not None for p in seen)
    assert write_dataset(tmp_path / "v1", 3, seed=3) and not any(
        perceive(Image.open(p)).marker for p in (tmp_path / "v1" / "1_toyworld").glob("*.png"))


def test_the_truth_measures_copies_collapse_and_leaks():
    from dataclasses import replace as with_

    from trainer.toyworld.truth import adherence, copy_share, detail_spread, perceive_all, share_with
    from trainer.toyworld.world import LOOK_V2, random_detail, render

    rng = random.Random(11)
    scene = Scene("red", "circle", "left", "white")
    training = [random_detail(scene, rng, LOOK_V2) for _ in range(4)]
    seen_training = perceive_all(render(scene, d) for d in training)
    copies = perceive_all(render(scene, d) for d in training[:3])
    fresh = perceive_all(draw(scene, rng, look=LOOK_V2) for _ in range(6))
    assert copy_share(copies + fresh[:1], seen_training) == 0.75
    assert copy_share(fresh, seen_training) == 0.0
    same = perceive_all(render(scene, training[0]) for _ in range(4))
    assert detail_spread(same) == 0.0 and detail_spread(fresh) > 0.1  # measured 0.58
    shaded = perceive_all(render(with_(scene, style="shaded"), d) for d in training[:2])
    assert share_with(shaded + copies, lambda p: p.style == "shaded") == 0.4
    defective = perceive_all([render(scene, with_(training[0], defect=True))])
    assert share_with(defective + copies, lambda p: p.defect) == 0.25
    images = [render(scene, d) for d in training[:2]]
    assert adherence(images, [scene.caption, "a blue circle on the left, white background"]) == 0.875
