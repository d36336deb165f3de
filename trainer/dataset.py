"""kohya's dataset layout, aspect-ratio buckets and deterministic batches.

Layout: images (`.png .jpg .jpeg .webp .bmp`) with same-named caption files. A subfolder `N_name`
(e.g. `10_mychar`) repeats each of its images N times per epoch, and an image there without a caption
gets `name` as its caption; an image in the top folder without a caption gets the trigger word (or the
empty caption). Subfolders not named `N_name` are ignored, as kohya ignores them. Everything surprising
(fallback captions, unreadable images, orphan caption files, ignored folders) is reported in `notes`.

Randomness: item k of epoch e draws from `random.Random(f"{seed}:{e}:{k}")` (flip first, then the
caption ops), and `bucket_batches` from `random.Random(f"batches:{seed}:{epoch}")`, so a run is
reproducible from the config alone.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from evalsvc.errors import InputError
from trainer.captions import CaptionOps, apply_caption_ops
from trainer.config import IMAGE_EXTENSIONS, DatasetConfig

_REPEAT_FOLDER = re.compile(r"(\d+)_(.+)")
_MAX_NAMES = 10  # file names listed per note before "and N more"


# --- buckets ----------------------------------------------------------------------------------------


def make_buckets(resolution: int, min_res: int, max_res: int, step: int = 64) -> list[tuple[int, int]]:
    """Bucket sizes (w, h), sorted, as kohya's `make_bucket_resolutions`.

    Widths run over the multiples of `step` in [min_res, max_res]; for each, the largest multiple of `step`
    height within [min_res, max_res] whose area is ≤ resolution² (and the transposed size); plus the
    largest square. Smaller sizes of the same shape are left out: they would tie on aspect ratio.
    """
    if not (step > 0 and min_res % step == 0 and max_res % step == 0 and 0 < min_res <= max_res):
        raise InputError(
            f"bucket bounds must be multiples of step {step} with 0 < min <= max, got min {min_res}, max {max_res}"
        )
    max_area = resolution * resolution
    square = math.isqrt(max_area) // step * step
    buckets = {(square, square)} if min_res <= square <= max_res else set()
    for width in range(min_res, max_res + 1, step):
        height = min(max_res, max_area // width // step * step)
        if height >= min_res:
            buckets.add((width, height))
            buckets.add((height, width))
    if not buckets:
        raise InputError(f"no bucket fits resolution {resolution} within {min_res}..{max_res} (step {step})")
    return sorted(buckets)


def closest_bucket(size: tuple[int, int], buckets) -> tuple[int, int]:
    """The bucket whose aspect ratio w/h is nearest the image's (the first in bucket order on ties), as kohya."""
    ratio = size[0] / size[1]
    return min(buckets, key=lambda b: abs(b[0] / b[1] - ratio))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Resize (Lanczos) so the image covers the bucket, then center-crop to it."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    new_w = max(width, round(image.width * scale))
    new_h = max(height, round(image.height * scale))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image as a float32 (3, H, W) tensor in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --- scanning the folder ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: its caption before caption ops, repeats per epoch and size after EXIF rotation."""

    path: Path
    caption: str
    repeats: int
    size: tuple[int, int]


@dataclass(frozen=True)
class ScanCounts:
    images: int = 0  # usable images
    samples_per_epoch: int = 0  # images counted with their repeats
    uncaptioned: int = 0  # usable images with a fallback caption
    unreadable: int = 0  # skipped: not an image PIL can decode, or an unreadable caption
    missing: int = 0  # caption files without an image, broken links
    ignored_folders: int = 0


@dataclass(frozen=True)
class DatasetScan:
    records: tuple[ImageRecord, ...]
    counts: ScanCounts
    notes: tuple[str, ...] = field(default=())


def _names(paths, root: Path) -> str:
    names = [p.relative_to(root).as_posix() for p in paths]
    more = f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
    return ", ".join(names[:_MAX_NAMES]) + more


def _image_size(path: Path) -> tuple[int, int]:
    """Decode the whole image (so truncated files are caught now, not mid-epoch); size after EXIF rotation."""
    with Image.open(path) as image:
        image.load()
        return ImageOps.exif_transpose(image).size


def _read_caption(path: Path) -> tuple[str, bool]:
    """The first line of a caption file (as kohya reads it), and whether more non-empty lines were ignored."""
    lines = [line.strip() for line in path.read_bytes().decode("utf-8-sig").splitlines()]
    lines = [line for line in lines if line]
    return (lines[0] if lines else ""), len(lines) > 1


def scan_folder(
    folder, caption_extension: str = ".txt", trigger_word: str | None = None, repeats: int = 1
) -> DatasetScan:
    """Find every usable image of a kohya-style folder; see the module docstring for the rules."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"dataset.folder is not a folder, got {str(folder)!r}")
    units = [(root, repeats, None)]  # (folder, repeats, fallback caption; None = top folder)
    notes, ignored = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        match = _REPEAT_FOLDER.fullmatch(sub.name)
        if match and int(match.group(1)) > 0:
            units.append((sub, int(match.group(1)), match.group(2)))
        else:
            ignored.append(sub)
    if ignored:
        notes.append(
            f"ignored {len(ignored)} subfolder(s) not named N_name with N >= 1 (as kohya does): {_names(ignored, root)}"
        )

    records, unreadable, missing, multiline = [], [], [], []
    uncaptioned_total = 0
    for unit, unit_repeats, name in units:
        files = sorted(p for p in unit.iterdir() if not p.name.startswith("."))
        image_stems = set()
        uncaptioned = []
        for path in files:
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            image_stems.add(path.stem)
            if not path.exists():
                missing.append(path)
                continue
            try:
                size = _image_size(path)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
                unreadable.append((path, str(error).splitlines()[0] if str(error) else type(error).__name__))
                continue
            caption_path = path.with_suffix(caption_extension)
            if caption_path.is_file():
                try:
                    caption, more = _read_caption(caption_path)
                except (OSError, UnicodeDecodeError) as error:
                    unreadable.append((caption_path, f"caption not readable as UTF-8 text: {error}"))
                    continue
                if more:
                    multiline.append(caption_path)
            else:
                caption = name if name is not None else (trigger_word or "")
                uncaptioned.append(path)
            records.append(ImageRecord(path=path, caption=caption, repeats=unit_repeats, size=size))
        stem_of = {p: p.name[: -len(caption_extension)] for p in files if p.name.endswith(caption_extension)}
        missing.extend(p for p, stem in stem_of.items() if stem not in image_stems)
        if uncaptioned:
            uncaptioned_total += len(uncaptioned)
            if name is not None:
                source = f"the folder name {name!r}"
            elif trigger_word:
                source = f"the trigger word {trigger_word!r}"
            else:
                source = "the empty caption"
            notes.append(f"{len(uncaptioned)} image(s) without a caption use {source}: {_names(uncaptioned, root)}")

    if unreadable:
        details = "; ".join(f"{p.relative_to(root).as_posix()} ({why})" for p, why in unreadable[:_MAX_NAMES])
        more = f"; and {len(unreadable) - _MAX_NAMES} more" if len(unreadable) > _MAX_NAMES else ""
        notes.append(f"skipped {len(unreadable)} unreadable file(s): {details}{more}")
    if missing:
        notes.append(f"{len(missing)} caption file(s) or link(s) without a readable image: {_names(missing, root)}")
    if multiline:
        notes.append(
            f"{len(multiline)} caption file(s) have more than one line; only the first is used: "
            f"{_names(multiline, root)}"
        )
    counts = ScanCounts(
        images=len(records),
        samples_per_epoch=sum(r.repeats for r in records),
        uncaptioned=uncaptioned_total,
        unreadable=len(unreadable),
        missing=len(missing),
        ignored_folders=len(ignored),
    )
    return DatasetScan(records=tuple(records), counts=counts, notes=tuple(notes))


def caption_ops_from(config: DatasetConfig) -> CaptionOps:
    return CaptionOps(
        shuffle_tags=config.shuffle_tags,
        keep_tokens=config.keep_tokens,
        dropout=config.caption_dropout,
        trigger_word=config.trigger_word,
    )


# --- the dataset ------------------------------------------------------------------------------------


class ImageDataset(torch.utils.data.Dataset):
    """Samples of one epoch: each image once per repeat, so `len()` is the number of samples per epoch.

    Item k is `{"pixels": (3, H, W) in [-1, 1], "caption": str, "bucket": (w, h), "path": str, "index": k}`;
    `set_epoch` picks the epoch that `__getitem__` draws its randomness for (as DistributedSampler does).
    """

    def __init__(
        self,
        records,
        buckets,
        *,
        caption_ops: CaptionOps = CaptionOps(),
        flip: bool = False,
        seed: int = 0,
        notes=(),
        counts: ScanCounts | None = None,
    ):
        self.records = tuple(records)
        if not self.records:
            raise InputError("dataset has no usable images" + (": " + "; ".join(notes) if notes else ""))
        self.buckets = tuple(buckets)
        self.caption_ops = caption_ops
        self.flip = flip
        self.seed = seed
        self.notes = tuple(notes)
        self.counts = counts
        self.epoch = 0
        self.image_buckets = tuple(closest_bucket(r.size, self.buckets) for r in self.records)
        # Sample k -> image: image i occupies records[i].repeats consecutive sample indices.
        self._sample_image = [i for i, r in enumerate(self.records) for _ in range(r.repeats)]

    @classmethod
    def from_config(cls, config: DatasetConfig, seed: int = 0) -> ImageDataset:
        scan = scan_folder(config.folder, config.caption_extension, config.trigger_word, config.repeats)
        buckets = make_buckets(config.resolution, config.min_resolution, config.max_resolution, config.bucket_step)
        return cls(
            scan.records,
            buckets,
            caption_ops=caption_ops_from(config),
            flip=config.flip,
            seed=seed,
            notes=scan.notes,
            counts=scan.counts,
        )

    def __len__(self) -> int:
        return len(self._sample_image)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def image_index(self, k: int) -> int:
        """Which record sample k shows."""
        return self._sample_image[k]

    def bucket_of(self, k: int) -> tuple[int, int]:
        return self.image_buckets[self._sample_image[k]]

    def rng(self, k: int, epoch: int) -> random.Random:
        return random.Random(f"{self.seed}:{epoch}:{k}")

    def get(self, k: int, epoch: int) -> dict:
        """Sample k of the given epoch; the same (seed, epoch, k) always gives the same pixels and caption."""
        if not 0 <= k < len(self):
            raise IndexError(f"sample {k} out of range 0..{len(self) - 1}")
        i = self._sample_image[k]
        record, bucket = self.records[i], self.image_buckets[i]
        rng = self.rng(k, epoch)
        flipped = self.flip and rng.random() < 0.5
        with Image.open(record.path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
        image = fit_to_bucket(image, bucket)
        if flipped:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {
            "pixels": to_tensor(image),
            "caption": apply_caption_ops(record.caption, self.caption_ops, rng),
            "bucket": bucket,
            "path": str(record.path),
            "index": k,
        }

    def __getitem__(self, k: int) -> dict:
        return self.get(k, self.epoch)


def bucket_batches(dataset: ImageDataset, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Sample indices grouped by bucket into batches (the last batch of a bucket may be short), shuffled per epoch.

    Every image appears `repeats` times per epoch (as its `repeats` sample indices).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InputError(f"train.batch_size must be >= 1, got {batch_size!r}")
    rng = random.Random(f"batches:{seed}:{epoch}")
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for k in range(len(dataset)):
        by_bucket.setdefault(dataset.bucket_of(k), []).append(k)
    batches = []
    for bucket in sorted(by_bucket):
        indices = by_bucket[bucket]
        rng.shuffle(indices)
        batches.extend(indices[i : i + batch_size] for i in range(0, len(indices), batch_size))
    rng.shuffle(batches)
    return batches
