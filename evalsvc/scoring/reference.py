"""The reference images a run is compared with: the training set, as a folder (kohya layout or flat)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def reference_images(folder: Path | None) -> dict[str, Path]:
    """{content sha256: file} for every image under `folder` (duplicates by content counted once)."""
    return {hashlib.sha256(path.read_bytes()).hexdigest(): path for path in _files(folder)}


def _files(folder: Path | None) -> list[Path]:
    if folder is None:
        raise InputError("no reference images: pass --reference DIR (the training images)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--reference {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--reference {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


class ReferenceCache:
    """`reference_images` of each folder, hashed again only when its listing (names, sizes, times) changes."""

    def __init__(self):
        self._folders: dict[Path, tuple[tuple, dict[str, Path]]] = {}

    def images(self, folder: Path) -> dict[str, Path]:
        files = _files(folder)
        listing = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        cached = self._folders.get(Path(folder))
        if cached is None or cached[0] != listing:
            cached = (listing, {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in files})
            self._folders[Path(folder)] = cached
        return cached[1]
