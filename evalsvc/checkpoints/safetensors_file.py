"""Read .safetensors files defensively: validate the header before trusting any of it."""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from evalsvc.errors import CheckpointError

# Bits per element for every dtype the safetensors format defines.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry; begin/end are byte offsets into the data area."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed, validated header of a .safetensors file."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_offset: int  # 8 + header length: where the tensor data starts in the file


def read_header(path) -> SafetensorsHeader:
    """Parse and validate the header of ``path`` without reading the tensor data."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(path, f"truncated: {size} bytes, not a safetensors file")
    with open(path, "rb") as f:
        start = f.read(8)
        (length,) = struct.unpack("<Q", start)
        disguised = _disguised(start) if length > min(size - 8, MAX_HEADER_BYTES) else None
        if disguised:
            raise CheckpointError(path, f"not a safetensors file but {disguised}, named .safetensors")
        if length > size - 8:
            raise CheckpointError(path, f"header length {length} is larger than the file ({size} bytes)")
        if length > MAX_HEADER_BYTES:
            raise CheckpointError(path, f"header length {length} exceeds the {MAX_HEADER_BYTES}-byte limit")
        raw = f.read(length)
    header = _parse_json(path, raw)
    metadata = _parse_metadata(path, header.pop("__metadata__", {}))
    tensors = {key: _parse_entry(path, key, value) for key, value in header.items()}
    data_offset = 8 + length
    _check_layout(path, tensors, size, data_offset)
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_offset=data_offset)


# What a file named .safetensors holds instead when it starts with these bytes; asked only of files whose first
# 8 bytes, read as the header length, cannot be one (so a real header's length never matches by chance).
PICKLE_STARTS = tuple(bytes([0x80, protocol]) + opcode for protocol in (2, 3, 4, 5)
                      for opcode in (b"\x95", b"}", b"]", b"(", b"c", b"q", b"\x8a"))  # PROTO n, first opcode
DISGUISES = ((b"PK\x03\x04", "a zip archive (torch.save's format: a pickled checkpoint)"),
             (PICKLE_STARTS, "a pickle (an old torch.save checkpoint)"),
             (b"GGUF", "a GGUF file"),
             (b"version ", "a Git LFS pointer (the file itself was never downloaded)"),
             ((b"<!DOCTYP", b"<!doctyp", b"<html", b"<HTML", b"<?xml"), "an HTML or XML page (a failed download?)"))


def _disguised(start: bytes) -> str | None:
    """What the file is, when its first bytes say it is not safetensors."""
    return next((what for magic, what in DISGUISES if start.startswith(magic)), None)


def _parse_json(path: Path, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(path, f"header is not UTF-8 (byte {e.start}); not a safetensors file") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise CheckpointError(path, f"header is not valid JSON ({_one_line(e)}); not a safetensors file") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, f"header is a JSON {type(header).__name__}, expected an object")
    return header


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _parse_metadata(path: Path, metadata) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise CheckpointError(path, f"__metadata__ is a JSON {type(metadata).__name__}, expected an object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise CheckpointError(path, f"__metadata__ value for {key!r} is {type(value).__name__}, expected a string")
    return dict(metadata)


def _parse_entry(path: Path, key: str, entry) -> TensorEntry:
    def bad(reason: str) -> CheckpointError:
        return CheckpointError(path, f"tensor {key!r}: {reason}")

    if not isinstance(entry, dict):
        raise bad(f"header entry is a JSON {type(entry).__name__}, expected an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise bad(f"data_offsets {offsets!r} is not a pair of non-negative integers")
    begin, end = offsets
    if end < begin:
        raise bad(f"data_offsets [{begin}, {end}] end before they begin")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        raise bad(f"data_offsets [{begin}, {end}] hold {end - begin} bytes but {dtype} {shape} needs {bits / 8:g}")
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_layout(path: Path, tensors: dict[str, TensorEntry], size: int, data_offset: int) -> None:
    """Tensor data must tile the data area exactly, as the safetensors library requires."""
    data_end = max((t.end for t in tensors.values()), default=0)
    if data_offset + data_end > size:
        raise CheckpointError(path, f"truncated: tensor data ends at byte {data_offset + data_end} but file has {size}")
    position = 0
    for key, entry in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if entry.begin != position:
            what = "overlaps the previous tensor" if entry.begin < position else "leaves a gap before it"
            raise CheckpointError(path, f"tensor {key!r}: data_offsets [{entry.begin}, {entry.end}] {what}")
        position = entry.end
    if data_offset + data_end != size:
        raise CheckpointError(path, f"{size - data_offset - data_end} unexpected bytes after the tensor data")


def load_tensors(path, device: str = "cpu") -> dict:
    """Validate the header, then load every tensor with ``safetensors.torch.load_file``."""
    read_header(path)
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device=device)
    except Exception as e:  # the library raises SafetensorError, OSError, RuntimeError, ...
        raise CheckpointError(path, f"cannot load tensors: {_one_line(e)}") from e


def check_finite(path, tensors) -> None:
    """Raise if any floating-point tensor holds NaN or Inf, naming the first such key."""
    import torch

    floats = [t for t in tensors.values() if t.is_floating_point() and t.numel()]
    try:  # one pass over everything, then the per-tensor search only when something is wrong
        if floats and bool(torch.isfinite(torch.cat([t.reshape(-1).float() for t in floats])).all()):
            return
    except (RuntimeError, TypeError, NotImplementedError):
        pass
    for key, tensor in tensors.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        try:
            finite = torch.isfinite(tensor)
        except (RuntimeError, TypeError, NotImplementedError):  # e.g. float8 kernels missing
            finite = torch.isfinite(tensor.float())
        bad = int(finite.numel() - finite.sum().item())
        if bad:
            raise CheckpointError(path, f"tensor {key!r} has {bad} NaN/Inf values")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
