"""An adapter file's tensors read into layers resolved against a loaded pipeline."""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from .kohya_format import COMPONENT_PREFIXES, read_kohya_layers
from .layer import AdapterLayer
from .peft_format import read_peft_layers


def read_adapter_layers(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], pipe,
                        lookups: dict[str, dict[str, str]] | None = None) -> list[AdapterLayer]:
    """The layers of a kohya-style (LoRA and LyCORIS) or PEFT-format file.

    `lookups` caches kohya's flattened module names per component across calls on one pipeline.
    """
    if any(k.startswith(tuple(COMPONENT_PREFIXES)) for k in tensors):
        layers = read_kohya_layers(path, tensors, pipe, {} if lookups is None else lookups)
    else:
        layers = read_peft_layers(path, tensors, metadata, pipe)
    if not layers:
        raise CheckpointError(path, "no adapter layers found (expected kohya lora_unet_/lora_te_ keys or PEFT "
                                    ".lora_A/.lora_B keys)")
    return layers
