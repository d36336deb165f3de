"""Content hashes that identify checkpoints, including the ones A1111 and kohya display."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from evalsvc.errors import CheckpointError
from evalsvc.checkpoints.folders import CHECKPOINT_FOLDER
from evalsvc.checkpoints.safetensors_file import read_header

CHUNK = 1 << 20


def sha256_file(path, chunk: int = CHUNK) -> str:
    """sha256 of the whole file, read in chunks (A1111's "Model hash" is its first 10 digits)."""
    return sha256_file_and_data(path, None, chunk)[0]


def addnet_hash(path) -> str:
    """sha256 of the bytes after the safetensors header: kohya's ``sshs_model_hash``."""
    return sha256_file_and_data(path, read_header(path).data_offset)[1]


def sha256_file_and_data(path, data_offset: int | None, chunk: int = CHUNK) -> tuple[str, str | None]:
    """One pass over ``path``: sha256 of the whole file and, if ``data_offset`` is given, of the bytes from it on."""
    whole = hashlib.sha256()
    data = hashlib.sha256() if data_offset is not None else None
    position = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                whole.update(block)
                if data is not None and position + len(block) > data_offset:
                    data.update(block[max(0, data_offset - position):])
                position += len(block)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    return whole.hexdigest(), data.hexdigest() if data is not None else None


def sha256_folder(path) -> str:
    """sha256 over sorted (relative path, file sha256) pairs; skips hidden entries, __pycache__ and the
    `checkpoint-<step>/` folders a training script saves beside its final pipeline (checkpoints of their own)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(path, "not a directory" if root.exists() else "directory not found")
    digest = hashlib.sha256()
    for relative in _folder_files(root):
        digest.update(f"{relative}\0{sha256_file(root / relative)}\n".encode("utf-8"))
    return digest.hexdigest()


def _folder_files(root: Path) -> list[str]:
    """Relative POSIX paths of the files under ``root``, sorted; follows links once, never loops."""
    files, seen = [], set()
    for directory, subdirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not _skipped(d) and not (directory == str(root)
                                                                     and CHECKPOINT_FOLDER.fullmatch(d))]
        for name in names:
            if not _skipped(name):
                files.append(Path(directory, name).relative_to(root).as_posix())
    return sorted(files)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"
