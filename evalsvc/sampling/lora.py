"""Adapter layers (`evalsvc.adapters`) applied to a loaded pipeline in place and removed exactly.

Switching epochs this way loads the base once. Every touched weight is backed up before its
first change and restored by copying the backup back, so the base after any number of swaps
is bit-identical to the base before them (W + d - d would not be, in floating point).
"""

from __future__ import annotations

import torch

from ..adapters.layer import AdapterLayer
from ..adapters.lora import LoraLayer
from ..errors import CheckpointError


def _misfit(path, layer: AdapterLayer, weight: torch.Tensor) -> CheckpointError:
    shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in layer.tensors().items())
    return CheckpointError(path, f"{type(layer).__name__.removesuffix('Layer')} layer {layer.component}.{layer.module} "
                                 f"({shapes}) does not fit the base weight {tuple(weight.shape)}; "
                                 "it was trained for another architecture")


class WeightPatcher:
    """Applies adapter deltas to a pipeline's weights in place and restores the pristine base exactly.

    A weight becomes pristine + strength * delta(pristine), computed in float32: for LoRA-like algorithms the
    delta does not depend on the weight; for DoRA, OFT, GLoRA and IA3 strength scales (merged - pristine),
    as A1111 and ComfyUI apply them.
    """

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

    def apply(self, path, layers: list[AdapterLayer], strength: float) -> None:
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

    def apply_many(self, parts: list[tuple[object, list[AdapterLayer], float]]) -> None:
        """Several LoRAs at once ((path, layers, strength) each): every touched weight is its pristine value plus
        the sum of each LoRA's strength times its delta (computed in float32); the rest go back to pristine."""
        deltas: dict[tuple[str, str], list[tuple[object, AdapterLayer, float]]] = {}
        for path, layers, strength in parts:
            for layer in layers:
                deltas.setdefault((layer.component, layer.module), []).append((path, layer, strength))
        self._restore(self._patched - set(deltas))
        with torch.no_grad():
            for slot, items in deltas.items():
                weight = self._weight(*slot)
                if slot not in self._backup:
                    self._backup[slot] = weight.detach().clone()
                pristine = self._backup[slot].float()
                total = pristine
                for path, layer, strength in items:
                    try:
                        total = total + strength * layer.delta(pristine)
                    except (RuntimeError, ValueError):
                        self.restore()
                        raise _misfit(path, layer, weight) from None
                weight.copy_(total.to(weight.dtype))
                self._patched.add(slot)

    @staticmethod
    def _patch(weight: torch.Tensor, pristine: torch.Tensor, layer: AdapterLayer, strength: float) -> None:
        """weight = pristine + strength * delta, computed in float32."""
        if (isinstance(layer, LoraLayer) and layer.mid is None and weight.dtype == torch.float32
                and weight.dim() in (2, 4) and weight.shape[2:] in ((), (1, 1))):
            scale = strength * layer.scale
            # One fused op for linear and 1x1-conv weights: W = W0 + scale * up @ down.
            up = layer.up.to(weight.device, torch.float32).reshape(layer.up.shape[0], -1)
            down = layer.down.to(weight.device, torch.float32).reshape(layer.rank, -1)
            rows = weight.shape[0]
            torch.addmm(pristine.view(rows, -1), up, down, alpha=scale, out=weight.view(rows, -1))
        else:
            base = pristine.float()
            weight.copy_((base + strength * layer.delta(base)).to(weight.dtype))

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
