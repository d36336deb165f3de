"""The reference images a run is compared with: the training set, as a folder (kohya layout or flat)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def reference_images(folder: Path | None) -> dict[str, Path]:
    """{content sha256: file} for every image under `folder` (duplicates by content counted once)."""
    if folder is None:
        raise InputError("no reference images: pass --reference DIR (the training images)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--reference {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--reference {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return {hashlib.sha256(path.read_bytes()).hexdigest(): path for path in files}
