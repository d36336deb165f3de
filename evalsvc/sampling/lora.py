"""LoRA files read into per-module deltas, applied to a loaded pipeline in place and removed exactly.

Switching epochs this way loads the base once. Every touched weight is backed up before its
first change and restored by copying the backup back, so the base after any number of swaps
is bit-identical to the base before them (W + d - d would not be, in floating point).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

COMPONENT_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
}
PEFT_COMPONENTS = ("unet", "text_encoder_2", "text_encoder")


@dataclass(frozen=True)
class LoraLayer:
    """One trained low-rank pair for one module: W += strength * (alpha / rank) * up @ down."""

    component: str
    module: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, weight_shape: torch.Size, device: torch.device) -> torch.Tensor:
        up = self.up.to(device, torch.float32).reshape(self.up.shape[0], -1)
        down = self.down.to(device, torch.float32).reshape(self.rank, -1)
        if up.shape[1] != self.rank:
            raise ValueError("rank mismatch")
        return ((self.alpha / self.rank) * (up @ down)).reshape(weight_shape)


def _module_lookup(model) -> dict[str, str]:
    """kohya flattens module paths with `_`; map each flattened name back to the real one.

    kohya's text-encoder keys carry the `text_model.` level that transformers 5 no longer has
    in CLIPTextModel, so those names are also reachable with that level added.
    """
    lookup = {}
    for name, module in model.named_modules():
        if hasattr(module, "weight"):
            lookup[name.replace(".", "_")] = name
            if not hasattr(model, "text_model") and name.startswith(("encoder.", "embeddings.", "final_layer_norm")):
                lookup["text_model_" + name.replace(".", "_")] = name
    return lookup


def _peft_alphas(metadata: dict[str, str]) -> dict[str, float]:
    """`lora_alpha / r` scale per component from diffusers' `lora_adapter_metadata`, if written."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    alphas = {}
    for key, config in meta.items():
        component = key.split("_lora_adapter_metadata")[0].split(".")[0]
        if isinstance(config, dict) and "lora_alpha" in config:
            alphas[component] = float(config["lora_alpha"])
    return alphas


def _kohya_layers(path, tensors, pipe) -> list[LoraLayer]:
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    if any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block")) for k in tensors):
        # SDXL LoRAs name UNet blocks as the original SGM code did; diffusers' own mapping
        # (what `load_lora_weights` uses) renames them to diffusers blocks.
        tensors = _maybe_map_sgm_blocks_to_diffusers(dict(tensors), pipe.unet.config)
    lookups: dict[str, dict[str, str]] = {}
    layers = []
    for key in sorted(tensors):
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key[: -len(".lora_down.weight")]
        prefix = next((p for p in COMPONENT_PREFIXES if stem.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(path, f"LoRA key {key!r} has no known prefix (lora_unet_, lora_te_, lora_te1_, lora_te2_)")
        component = COMPONENT_PREFIXES[prefix]
        model = getattr(pipe, component, None)
        if model is None:
            raise CheckpointError(path, f"LoRA targets {component}, which this base model does not have")
        lookup = lookups.setdefault(component, _module_lookup(model))
        flat = stem[len(prefix):]
        if flat not in lookup:
            raise CheckpointError(path, f"LoRA module {stem!r} does not exist in the base model's {component}; "
                                        "the LoRA was trained for another architecture")
        up_key = stem + ".lora_up.weight"
        if up_key not in tensors:
            raise CheckpointError(path, f"LoRA key {up_key!r} is missing")
        down = tensors[key]
        alpha_t = tensors.get(stem + ".alpha")
        alpha = float(alpha_t.item()) if alpha_t is not None else float(down.shape[0])
        layers.append(LoraLayer(component, lookup[flat], down, tensors[up_key], alpha))
    return layers


def _peft_layers(path, tensors, metadata, pipe) -> list[LoraLayer]:
    alphas = _peft_alphas(metadata)
    layers = []
    for key in sorted(tensors):
        for down_suffix, up_suffix in ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight")):
            if key.endswith(down_suffix):
                break
        else:
            continue
        stem = key[: -len(down_suffix)].replace("base_model.model.", "")
        component = next((c for c in PEFT_COMPONENTS if stem.startswith(c + ".")), None)
        if component is None or getattr(pipe, component, None) is None:
            raise CheckpointError(path, f"LoRA key {key!r} targets a component this base model does not have")
        module = stem[len(component) + 1:]
        model = getattr(pipe, component)
        if module.startswith("text_model.") and not hasattr(model, "text_model"):
            module = module[len("text_model."):]  # transformers 5 dropped this level
        down = tensors[key]
        layers.append(LoraLayer(component, module, down, tensors[key[: -len(down_suffix)] + up_suffix],
                                alphas.get(component, float(down.shape[0]))))
    return layers


def read_lora_layers(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], pipe) -> list[LoraLayer]:
    """The layers of a kohya- or PEFT-format LoRA, resolved against `pipe`'s modules."""
    if any(k.startswith("lora_") for k in tensors):
        layers = _kohya_layers(path, tensors, pipe)
    else:
        layers = _peft_layers(path, tensors, metadata, pipe)
    if not layers:
        raise CheckpointError(path, "no LoRA layers found (expected .lora_down/.lora_up or .lora_A/.lora_B keys)")
    return layers


class WeightPatcher:
    """Applies LoRA deltas to a pipeline's weights in place and restores the pristine base exactly."""

    def __init__(self, pipe):
        self.pipe = pipe
        self._backup: dict[tuple[str, str], torch.Tensor] = {}
        self._patched: set[tuple[str, str]] = set()

    def _weight(self, component: str, module: str) -> torch.nn.Parameter:
        return getattr(self.pipe, component).get_submodule(module).weight

    def apply(self, path, layers: list[LoraLayer], strength: float) -> None:
        """Restore the base, then add each layer's delta times `strength`."""
        self.restore()
        for layer in layers:
            weight = self._weight(layer.component, layer.module)
            try:
                delta = layer.delta(weight.shape, weight.device)
            except (RuntimeError, ValueError):
                self.restore()
                raise CheckpointError(
                    path, f"LoRA layer {layer.component}.{layer.module} has shapes {tuple(layer.up.shape)} x "
                          f"{tuple(layer.down.shape)} that do not fit the base weight {tuple(weight.shape)}; "
                          "the LoRA was trained for another architecture") from None
            slot = (layer.component, layer.module)
            if slot not in self._backup:
                self._backup[slot] = weight.detach().clone()
            pristine = self._backup[slot]
            with torch.no_grad():
                patched = pristine.float() + strength * delta
                weight.copy_(patched.to(weight.dtype))
            self._patched.add(slot)

    def restore(self) -> None:
        """Copy the pristine weights back into every module changed since the last restore."""
        with torch.no_grad():
            for slot in self._patched:
                self._weight(*slot).copy_(self._backup[slot])
        self._patched.clear()

    def patched_components(self) -> set[str]:
        return {component for component, _ in self._patched}
