"""Checkpoint files: safe reading, hashing, naming conventions and detection of what they are."""

from evalsvc.checkpoints.detect import CheckpointInfo, inspect_checkpoint
from evalsvc.checkpoints.hashing import sha256_file
from evalsvc.checkpoints.safetensors_file import check_finite, load_tensors, read_header

__all__ = ["CheckpointInfo", "inspect_checkpoint", "read_header", "load_tensors", "check_finite", "sha256_file"]
