"""PEFT/diffusers adapter files (`unet.….lora_A.weight`), as diffusers' `save_lora_weights` writes them: LoRA,
rsLoRA and DoRA (`lora_magnitude_vector`), with alpha and rsLoRA from `lora_adapter_metadata`."""

from __future__ import annotations

import json
import math

from ..errors import CheckpointError
from .dora import peft_dora
from .layer import AdapterLayer
from .lora import LoraLayer

PEFT_COMPONENTS = ("unet", "text_encoder_2", "text_encoder")
PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"))
MAGNITUDE = ".lora_magnitude_vector"


class PeftScales:
    """The scale per component (and per-module `alpha_pattern`/`rank_pattern`) from `lora_adapter_metadata`.

    diffusers writes it as flat JSON keys such as `unet.lora_alpha`, `unet.use_rslora`; without it a PEFT
    file means alpha == rank (scale 1). rsLoRA scales by alpha / sqrt(rank) instead of alpha / rank.
    """

    def __init__(self, path, metadata: dict[str, str]):
        try:
            meta = json.loads(metadata.get("lora_adapter_metadata") or "{}")
        except json.JSONDecodeError:
            raise CheckpointError(path, "lora_adapter_metadata is not valid JSON") from None
        self._meta = meta if isinstance(meta, dict) else {}

    def scale(self, component: str, module: str, rank: int) -> float:
        alpha = self._pattern(component, "alpha_pattern", module)
        if alpha is None:
            alpha = self._meta.get(f"{component}.lora_alpha")
        alpha = float(alpha) if alpha is not None else float(rank)
        if self._meta.get(f"{component}.use_rslora"):
            return alpha / math.sqrt(rank)
        return alpha / rank

    def _pattern(self, component: str, name: str, module: str):
        for pattern, value in (self._meta.get(f"{component}.{name}") or {}).items():
            if module == pattern or module.endswith("." + pattern):
                return value
        return None


def read_peft_layers(path, tensors, metadata, pipe) -> list[AdapterLayer]:
    scales = PeftScales(path, metadata)
    layers = []
    for key in sorted(tensors):
        for down_suffix, up_suffix in PAIRS:
            if key.endswith(down_suffix):
                break
        else:
            continue
        base = key[: -len(down_suffix)]
        stem = base.replace("base_model.model.", "")
        component = next((c for c in PEFT_COMPONENTS if stem.startswith(c + ".")), None)
        if component is None or getattr(pipe, component, None) is None:
            raise CheckpointError(path, f"LoRA key {key!r} targets a component this base model does not have")
        module = stem[len(component) + 1:]
        model = getattr(pipe, component)
        if module.startswith("text_model.") and not hasattr(model, "text_model"):
            module = module[len("text_model."):]  # transformers 5 dropped this level
        if base + up_suffix not in tensors:
            raise CheckpointError(path, f"LoRA key {base + up_suffix!r} is missing")
        down = tensors[key]
        layer = LoraLayer(component, module, down, tensors[base + up_suffix],
                          scales.scale(component, module, down.shape[0]))
        magnitude = next((tensors[m] for m in (base + MAGNITUDE, base + MAGNITUDE + ".weight") if m in tensors), None)
        layers.append(layer if magnitude is None else peft_dora(layer, magnitude))
    return layers
