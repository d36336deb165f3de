"""Which files the app may serve: only the store's content-addressed images, named exactly as the store names them.

A request names an image as `ab/<64 hex>.png` (the image store's layout), possibly percent-encoded. It is
decoded until stable (double encoding such as `%252e` included), then must match that pattern exactly:
lower-case hex, no other characters, so `..`, absolute paths, backslashes, NUL, other suffixes and case
variants are refused before the file system is touched. The path is then resolved (symlinks followed) and
must still lie inside the image folder and be a regular file: a symlink that points out is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from ..errors import InputError

IMAGE_NAME = re.compile(r"(?P<prefix>[0-9a-f]{2})/(?P=prefix)[0-9a-f]{62}\.png")
MAX_DECODES = 3


class FileRefused(InputError):
    """A request for a file the app does not serve."""


def resolve_image(images_root: Path, requested: str) -> Path:
    """The image file `requested` names under `images_root`; raises FileRefused for anything else."""
    name = requested
    for _ in range(MAX_DECODES):
        decoded = unquote(name)
        if decoded == name:
            break
        name = decoded
    else:
        raise FileRefused("refused: the name is encoded too many times")
    if not IMAGE_NAME.fullmatch(name):
        raise FileRefused("refused: only store images (ab/<sha256>.png) are served")
    root = Path(images_root).resolve()
    try:
        path = (root / name).resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise FileRefused("refused: no such image") from None
    if not path.is_relative_to(root) or not path.is_file():
        raise FileRefused("refused: the name leads outside the image folder")
    return path
