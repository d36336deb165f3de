"""Per-epoch checkpoints in kohya's file and key layout, written atomically (temp file, then rename)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save


def kohya_state_dict(pipe, tensors) -> dict[str, torch.Tensor]:
    from evalsvc.toy.lora_files import _sgm_prefixes, kohya_lora_name
    from evalsvc.toy.single_file import is_sdxl

    sdxl = is_sdxl(pipe)
    sgm = _sgm_prefixes(pipe.unet) if sdxl else None
    out = {}
    for component, modules in tensors.items():
        for module, (down, up, alpha) in modules.items():
            key = kohya_lora_name(component, module, sdxl=sdxl, sgm_prefixes=sgm)
            out[f"{key}.lora_down.weight"] = down.contiguous()
            out[f"{key}.lora_up.weight"] = up.contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


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
