"""Caption ops, kohya folder scanning, buckets and batches, each checked against a direct computation."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from evalsvc.errors import InputError
from trainer.captions import CaptionOps, apply_caption_ops, shuffle_tags, split_tags
from trainer.config import DatasetConfig
from trainer.dataset import ImageDataset, bucket_batches, closest_bucket, make_buckets, scan_folder

# --- captions ---------------------------------------------------------------------------------------


def test_split_tags_strips_and_drops_empties():
    assert split_tags(" a, b ,,  c d ,") == ["a", "b", "c d"]
    assert split_tags("") == []


def test_shuffle_keeps_the_first_tags_and_permutes_the_rest():
    tags = [f"t{i}" for i in range(12)]
    for seed in range(20):
        got = shuffle_tags(tags, 3, random.Random(seed))
        rest = tags[3:]
        random.Random(seed).shuffle(rest)  # the direct computation with the same rng
        assert got == tags[:3] + rest
        assert got[:3] == tags[:3] and sorted(got[3:]) == sorted(tags[3:])
    assert shuffle_tags(tags, 20, random.Random(0)) == tags
    orders = {tuple(shuffle_tags(tags, 0, random.Random(s))) for s in range(5)}
    assert len(orders) > 1


def test_dropout_rate_matches_the_configured_probability():
    ops = CaptionOps(dropout=0.3, trigger_word="mychar")
    rng = random.Random(1234)
    n = 4000
    dropped = sum(apply_caption_ops("a, b", ops, rng) == "" for _ in range(n))
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(dropped - n * 0.3) < 4 * sigma
    assert all(apply_caption_ops("a", CaptionOps(dropout=1.0, trigger_word="x"), rng) == "" for _ in range(10))
    assert all(apply_caption_ops("a", CaptionOps(dropout=0.0), rng) == "a" for _ in range(10))


def test_trigger_word_is_added_once_as_the_first_tag():
    ops = CaptionOps(trigger_word="mychar")
    rng = random.Random(0)
    assert apply_caption_ops("smile, red eyes", ops, rng) == "mychar, smile, red eyes"
    assert apply_caption_ops("smile, mychar", ops, rng) == "smile, mychar"
    assert apply_caption_ops("", ops, rng) == "mychar"
    shuffled = CaptionOps(trigger_word="mychar", shuffle_tags=True, keep_tokens=1)
    for seed in range(10):
        out = split_tags(apply_caption_ops("a, b, c, d", shuffled, random.Random(seed)))
        assert out[0] == "mychar" and out.count("mychar") == 1 and sorted(out[1:]) == ["a", "b", "c", "d"]


def test_caption_ops_are_deterministic_given_the_rng():
    ops = CaptionOps(shuffle_tags=True, keep_tokens=1, dropout=0.2, trigger_word="tw")
    first = [apply_caption_ops("a, b, c, d, e", ops, random.Random(s)) for s in range(30)]
    again = [apply_caption_ops("a, b, c, d, e", ops, random.Random(s)) for s in range(30)]
    assert first == again


def test_caption_ops_refuse_nonsense():
    with pytest.raises(InputError, match="keep_tokens"):
        CaptionOps(keep_tokens=-1)
    with pytest.raises(InputError, match="dropout"):
        CaptionOps(dropout=2)


# --- folders ----------------------------------------------------------------------------------------


def png(path, size=(64, 64), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image.putpixel((0, 0), (0, 0, 255))  # marks the left edge, so flips are visible
    image.save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    png(root / "top_a.png", (96, 64))
    (root / "top_a.txt").write_text("cat, sitting\n", encoding="utf-8")
    png(root / "top_b.png", (64, 96))  # no caption: top-folder fallback
    png(root / "10_mychar" / "c1.png", (64, 64))
    (root / "10_mychar" / "c1.txt").write_text("mychar, smile, red eyes, hat", encoding="utf-8")
    png(root / "10_mychar" / "c2.png", (128, 64))
    png(root / "10_mychar" / "c3.jpg", (64, 128))
    (root / "10_mychar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    png(root / "3_style" / "s1.webp", (80, 80))
    (root / "3_style" / "s1.txt").write_text("painting", encoding="utf-8")
    png(root / "misc" / "ignored.png")
    (root / "3_style" / "orphan.txt").write_text("no image here", encoding="utf-8")
    return root


def test_scan_counts_repeats_fallback_captions_and_problems(folder):
    scan = scan_folder(folder, ".txt", trigger_word=None, repeats=2)
    by_name = {r.path.name: r for r in scan.records}
    assert set(by_name) == {"top_a.png", "top_b.png", "c1.png", "c2.png", "c3.jpg", "s1.webp"}
    assert [by_name[n].repeats for n in ("top_a.png", "c1.png", "s1.webp")] == [2, 10, 3]
    assert by_name["c2.png"].caption == "mychar" and by_name["c3.jpg"].caption == "mychar"
    assert by_name["c1.png"].caption == "mychar, smile, red eyes, hat"
    assert by_name["top_b.png"].caption == ""
    assert by_name["c2.png"].size == (128, 64)
    counts = scan.counts
    assert (counts.images, counts.samples_per_epoch) == (6, 2 * 2 + 3 * 10 + 3)
    assert (counts.uncaptioned, counts.unreadable, counts.missing, counts.ignored_folders) == (3, 1, 1, 1)
    notes = "\n".join(scan.notes)
    assert "2 image(s) without a caption use the folder name 'mychar'" in notes
    assert "1 image(s) without a caption use the empty caption" in notes
    assert "10_mychar/broken.png" in notes and "skipped 1 unreadable" in notes
    assert "3_style/orphan.txt" in notes
    assert "misc" in notes


def test_top_folder_fallback_is_the_trigger_word(folder):
    scan = scan_folder(folder, ".txt", trigger_word="tw")
    assert {r.path.name: r.caption for r in scan.records}["top_b.png"] == "tw"
    assert any("use the trigger word 'tw'" in note for note in scan.notes)


def test_folder_without_usable_images_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="no usable images.*bad.png"):
        ImageDataset.from_config(DatasetConfig(folder=str(tmp_path / "d")))


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="dataset.folder"):
        scan_folder(tmp_path / "absent")


def test_items_per_epoch_follow_repeats(folder):
    config = DatasetConfig(folder=str(folder), resolution=64, bucket_step=32, min_resolution=32, max_resolution=128)
    dataset = ImageDataset.from_config(config, seed=0)
    assert len(dataset) == 2 * 1 + 3 * 10 + 3
    per_image = Counter(dataset.image_index(k) for k in range(len(dataset)))
    assert [per_image[i] for i in range(len(dataset.records))] == [r.repeats for r in dataset.records]
    batches = bucket_batches(dataset, batch_size=4, seed=0, epoch=0)
    flat = [k for batch in batches for k in batch]
    assert sorted(flat) == list(range(len(dataset)))
    assert Counter(dataset.image_index(k) for k in flat) == per_image


# --- buckets ----------------------------------------------------------------------------------------


BOUNDS = [(512, 256, 1024, 64), (768, 320, 1536, 64), (64, 32, 128, 32)]


@pytest.mark.parametrize(("resolution", "low", "high", "step"), BOUNDS)
def test_bucket_list_properties(resolution, low, high, step):
    buckets = make_buckets(resolution, low, high, step)
    assert buckets == sorted(set(buckets))
    side = math.isqrt(resolution * resolution) // step * step
    assert (side, side) in buckets
    for w, h in buckets:
        assert w % step == 0 and h % step == 0
        assert low <= w <= high and low <= h <= high
        assert w * h <= resolution * resolution
        assert (h, w) in buckets
        # as kohya's: the tallest for its width or the widest for its height (one step more breaks a bound)
        area = resolution * resolution
        tallest = h + step > high or w * (h + step) > area
        widest = w + step > high or (w + step) * h > area
        assert tallest or widest or (w, h) == (side, side)


def test_kohya_buckets_for_512():
    buckets = make_buckets(512, 256, 1024, 64)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    assert (448, 576) in buckets and (384, 640) in buckets and (320, 768) in buckets
    assert (256, 256) not in buckets


def test_bucket_assignment_is_the_closest_aspect_ratio():
    buckets = make_buckets(512, 256, 1024, 64)
    ratios = np.array([w / h for w, h in buckets])
    rng = np.random.default_rng(0)
    for w, h in rng.integers(40, 3000, size=(200, 2)):
        expected = buckets[int(np.argmin(np.abs(ratios - w / h)))]
        assert closest_bucket((int(w), int(h)), buckets) == expected


def test_items_are_resized_to_cover_and_center_cropped(tmp_path):
    root = tmp_path / "d"
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    for x in range(100, 200):  # a white middle third
        for y in range(100):
            image.putpixel((x, y), (255, 255, 255))
    root.mkdir()
    image.save(root / "wide.png")
    config = DatasetConfig(folder=str(root), resolution=64, bucket_step=32, min_resolution=32, max_resolution=128)
    dataset = ImageDataset.from_config(config, seed=0)
    item = dataset[0]
    w, h = item["bucket"]
    assert item["pixels"].shape == (3, h, w) and item["pixels"].dtype == torch.float32
    assert item["pixels"].min() >= -1 and item["pixels"].max() <= 1
    assert (w, h) == closest_bucket((300, 100), dataset.buckets)
    # covering scale is h/100; the crop keeps the middle, so the center column is white
    assert item["pixels"][:, h // 2, w // 2].tolist() == pytest.approx([1.0, 1.0, 1.0])


# --- determinism ------------------------------------------------------------------------------------


def make_dataset(folder, seed=0, flip=True):
    config = DatasetConfig(
        folder=str(folder), resolution=64, bucket_step=32, min_resolution=32, max_resolution=128,
        flip=flip, shuffle_tags=True, keep_tokens=1, caption_dropout=0.1, trigger_word="tw",
    )
    return ImageDataset.from_config(config, seed=seed)


def test_same_seed_gives_identical_batches_and_items(folder):
    a, b = make_dataset(folder), make_dataset(folder)
    assert bucket_batches(a, 3, seed=5, epoch=2) == bucket_batches(b, 3, seed=5, epoch=2)
    for k in range(len(a)):
        x, y = a.get(k, epoch=2), b.get(k, epoch=2)
        assert x["caption"] == y["caption"] and x["bucket"] == y["bucket"]
        assert torch.equal(x["pixels"], y["pixels"])


def test_batches_hold_one_bucket_and_change_order_per_epoch(folder):
    dataset = make_dataset(folder)
    first, second = bucket_batches(dataset, 3, seed=5, epoch=0), bucket_batches(dataset, 3, seed=5, epoch=1)
    assert [k for b in first for k in b] != [k for b in second for k in b]
    for batch in first:
        assert 1 <= len(batch) <= 3 and len({dataset.bucket_of(k) for k in batch}) == 1
    assert sorted(k for b in second for k in b) == list(range(len(dataset)))


def test_captions_and_flips_vary_with_epoch_and_repeat_but_follow_the_seed(folder):
    dataset = make_dataset(folder)
    c1 = dataset.image_index  # sample index -> image
    samples = [k for k in range(len(dataset)) if dataset.records[c1(k)].path.name == "c1.png"]
    assert len(samples) == 10
    captions = {dataset.get(k, epoch)["caption"] for k in samples for epoch in range(3)}
    assert len(captions) > 3  # shuffled differently per repeat and epoch
    for caption in captions - {""}:
        assert split_tags(caption)[0] == "tw"
    pixels = [dataset.get(k, 0)["pixels"] for k in samples]
    flipped = [p for p in pixels if p[2, 0, -1] > 0.9]  # the blue marker pixel moved to the right edge
    assert 0 < len(flipped) < len(pixels)
    unflipped = make_dataset(folder, flip=False)
    assert all(unflipped.get(k, 0)["pixels"][2, 0, 0] > 0.9 for k in samples)
    dataset.set_epoch(1)
    assert dataset[samples[0]]["caption"] == dataset.get(samples[0], 1)["caption"]
