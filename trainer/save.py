"""Per-epoch checkpoint files written atomically (temp file, fsync, then rename), with kohya's `sshs_model_hash`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save


def write_atomically(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> Path:
    """Write a safetensors file under a temporary name, fsync it, then rename it into place.

    `sshs_model_hash` (sha256 of the bytes after the header, A1111's LoRA hash) is added.
    A full disk or a killed process leaves at most a `.tmp` file, never a partial final file.
    """
    body = save(state)
    header_len = int.from_bytes(body[:8], "little")
    metadata = {**metadata, "sshs_model_hash": hashlib.sha256(body[8 + header_len:]).hexdigest()}
    data = save(state, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
