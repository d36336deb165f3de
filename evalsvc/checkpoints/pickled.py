"""Pickled checkpoints (.ckpt .pt .pth .bin): opt-in, and only through torch's weights-only unpickler."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from evalsvc.errors import CheckpointError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_WEIGHTS_ONLY_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", re.DOTALL)


def load_pickled(path, allow_pickle: bool) -> dict:
    """Load a pickled state dict with ``torch.load(weights_only=True)``; refused unless ``allow_pickle``.

    A top-level ``"state_dict"`` (as in A1111/LDM .ckpt files) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "not a regular file")
    if not allow_pickle:
        raise CheckpointError(
            path,
            f"refusing to unpickle {path}: pickled checkpoints can run code; "
            "convert it to .safetensors or pass --allow-pickle",
        )
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, _refusal(e)) from None
    except Exception as e:  # corrupt zip, unknown pickle opcodes, truncated data, ...
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(e).__name__}: {_one_line(e)})") from None
    return _state_dict(path, loaded)


def _refusal(error: Exception) -> str:
    match = _WEIGHTS_ONLY_DETAIL.search(str(error))
    detail = _one_line(match.group(1) if match else error)
    if "global" in detail.lower():
        return (
            f"torch.load(weights_only=True) refused it ({detail}): it holds objects other than tensors, "
            "which could run code; convert it to .safetensors with a tool you trust"
        )
    return f"not a readable PyTorch checkpoint (torch.load(weights_only=True): {detail})"


def _state_dict(path: Path, loaded) -> dict:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise CheckpointError(path, f"holds a {type(loaded).__name__}, expected a dict of tensors")
    import torch

    for key, value in loaded.items():
        if not isinstance(key, str):
            raise CheckpointError(path, f"state dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"state dict value for {key!r} is a {type(value).__name__}, not a tensor")
    if not loaded:
        raise CheckpointError(path, "state dict is empty")
    return dict(loaded)


def _one_line(error) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
