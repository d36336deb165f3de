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

# SGM (original SDXL code) names left after diffusers renumbers the blocks, as diffusers'
# `_convert_unet_lora_key` renames them; resnet internals for LoCon-style conv LoRAs.
_SGM_RENAMES = (
    ("lora_unet_input_blocks_0_0", "lora_unet_conv_in"),
    ("lora_unet_out_2", "lora_unet_conv_out"),
    ("lora_unet_time_embed_0", "lora_unet_time_embedding_linear_1"),
    ("lora_unet_time_embed_2", "lora_unet_time_embedding_linear_2"),
    ("lora_unet_label_emb_0_0", "lora_unet_add_embedding_linear_1"),
    ("lora_unet_label_emb_0_2", "lora_unet_add_embedding_linear_2"),
    ("lora_unet_input_blocks_", "lora_unet_down_blocks_"),
    ("lora_unet_middle_block_", "lora_unet_mid_block_"),
    ("lora_unet_output_blocks_", "lora_unet_up_blocks_"),
    ("_in_layers_2", "_conv1"),
    ("_emb_layers_1", "_time_emb_proj"),
    ("_out_layers_3", "_conv2"),
    ("_skip_connection", "_conv_shortcut"),
    ("_op", "_conv"),
)


def _rename_sgm(key: str) -> str:
    for old, new in _SGM_RENAMES:
        if old.startswith("lora_unet_"):
            if key.startswith(old):
                key = new + key[len(old):]
        else:
            key = key.replace(old + ".", new + ".")
    return key


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


class _PeftAlphas:
    """`lora_alpha` per component (and per-module `alpha_pattern`) from diffusers' `lora_adapter_metadata`.

    diffusers writes it as flat JSON keys such as `unet.lora_alpha`, `unet.alpha_pattern`;
    without it PEFT files mean alpha == rank (scale 1).
    """

    def __init__(self, metadata: dict[str, str]):
        try:
            meta = json.loads(metadata.get("lora_adapter_metadata") or "{}")
        except json.JSONDecodeError:
            meta = {}
        self._meta = meta if isinstance(meta, dict) else {}

    def alpha(self, component: str, module: str, rank: int) -> float:
        for pattern, value in (self._meta.get(f"{component}.alpha_pattern") or {}).items():
            if module == pattern or module.endswith("." + pattern):
                return float(value)
        value = self._meta.get(f"{component}.lora_alpha")
        return float(value) if value is not None else float(rank)


def _kohya_layers(path, tensors, pipe, lookups: dict[str, dict[str, str]]) -> list[LoraLayer]:
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    if any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block")) for k in tensors):
        # SDXL LoRAs name UNet blocks as the original SGM code did; diffusers' own mapping
        # (what `load_lora_weights` uses) renames them to diffusers blocks.
        tensors = _maybe_map_sgm_blocks_to_diffusers(dict(tensors), pipe.unet.config)
        tensors = {_rename_sgm(k) if k.startswith("lora_unet_") else k: v for k, v in tensors.items()}
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
        if component not in lookups:
            lookups[component] = _module_lookup(model)
        lookup = lookups[component]
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
    alphas = _PeftAlphas(metadata)
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
                                alphas.alpha(component, module, down.shape[0])))
    return layers


def read_lora_layers(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], pipe,
                     lookups: dict[str, dict[str, str]] | None = None) -> list[LoraLayer]:
    """The layers of a kohya- or PEFT-format LoRA, resolved against `pipe`'s modules.

    `lookups` caches kohya's flattened module names per component across calls on one pipeline.
    """
    if any(k.startswith("lora_") for k in tensors):
        layers = _kohya_layers(path, tensors, pipe, {} if lookups is None else lookups)
    else:
        layers = _peft_layers(path, tensors, metadata, pipe)
    if not layers:
        raise CheckpointError(path, "no LoRA layers found (expected .lora_down/.lora_up or .lora_A/.lora_B keys)")
    return layers


def _misfit(path, layer: LoraLayer, weight: torch.Tensor) -> CheckpointError:
    return CheckpointError(path, f"LoRA layer {layer.component}.{layer.module} has shapes {tuple(layer.up.shape)} x "
                                 f"{tuple(layer.down.shape)} that do not fit the base weight {tuple(weight.shape)}; "
                                 "the LoRA was trained for another architecture")


class WeightPatcher:
    """Applies LoRA deltas to a pipeline's weights in place and restores the pristine base exactly."""

    def __init__(self, pipe):
        self.pipe = pipe
        self._backup: dict[tuple[str, str], torch.Tensor] = {}
        self._params: dict[tuple[str, str], torch.nn.Parameter] = {}
        self._patched: set[tuple[str, str]] = set()

    def _weight(self, component: str, module: str) -> torch.nn.Parameter:
        slot = (component, module)
        if slot not in self._params:
            self._params[slot] = getattr(self.pipe, component).get_submodule(module).weight
        return self._params[slot]

    def apply(self, path, layers: list[LoraLayer], strength: float) -> None:
        """Set each layer's weight to its pristine value plus `strength` times its delta; every other
        weight changed by an earlier apply goes back to pristine."""
        targets = {(layer.component, layer.module) for layer in layers}
        self._restore(self._patched - targets)  # the rest are rewritten from their backups below
        with torch.no_grad():
            for layer in layers:
                slot = (layer.component, layer.module)
                weight = self._weight(*slot)
                if slot not in self._backup:
                    self._backup[slot] = weight.detach().clone()
                pristine = self._backup[slot]
                try:
                    self._patch(weight, pristine, layer, strength)
                except (RuntimeError, ValueError):
                    self.restore()
                    raise _misfit(path, layer, weight) from None
                self._patched.add(slot)

    def apply_many(self, parts: list[tuple[object, list[LoraLayer], float]]) -> None:
        """Several LoRAs at once ((path, layers, strength) each): every touched weight is its pristine value plus
        the sum of each LoRA's strength times its delta (computed in float32); the rest go back to pristine."""
        deltas: dict[tuple[str, str], list[tuple[object, LoraLayer, float]]] = {}
        for path, layers, strength in parts:
            for layer in layers:
                deltas.setdefault((layer.component, layer.module), []).append((path, layer, strength))
        self._restore(self._patched - set(deltas))
        with torch.no_grad():
            for slot, items in deltas.items():
                weight = self._weight(*slot)
                if slot not in self._backup:
                    self._backup[slot] = weight.detach().clone()
                total = self._backup[slot].float()
                for path, layer, strength in items:
                    try:
                        total = total + strength * layer.delta(weight.shape, weight.device)
                    except (RuntimeError, ValueError):
                        self.restore()
                        raise _misfit(path, layer, weight) from None
                weight.copy_(total.to(weight.dtype))
                self._patched.add(slot)

    @staticmethod
    def _patch(weight: torch.Tensor, pristine: torch.Tensor, layer: LoraLayer, strength: float) -> None:
        """weight = pristine + strength * delta, computed in float32."""
        scale = strength * layer.alpha / layer.rank
        if weight.dtype == torch.float32 and weight.dim() in (2, 4) and weight.shape[2:] in ((), (1, 1)):
            # One fused op for linear and 1x1-conv weights: W = W0 + scale * up @ down.
            up = layer.up.to(weight.device, torch.float32).reshape(layer.up.shape[0], -1)
            down = layer.down.to(weight.device, torch.float32).reshape(layer.rank, -1)
            rows = weight.shape[0]
            torch.addmm(pristine.view(rows, -1), up, down, alpha=scale, out=weight.view(rows, -1))
        else:
            delta = layer.delta(weight.shape, weight.device)
            weight.copy_((pristine.float() + strength * delta).to(weight.dtype))

    def restore(self) -> None:
        """Copy the pristine weights back into every module changed since the last restore."""
        self._restore(set(self._patched))

    def _restore(self, slots: set[tuple[str, str]]) -> None:
        with torch.no_grad():
            for slot in slots:
                self._weight(*slot).copy_(self._backup[slot])
        self._patched -= slots

    def patched_components(self) -> set[str]:
        return {component for component, _ in self._patched}
