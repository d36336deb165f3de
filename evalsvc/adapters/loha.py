"""LoHa: the Hadamard product of two low-rank products (FedPara, Hyeon-Woo et al. 2022; LyCORIS functional/loha.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layer import AdapterLayer, f32, fitted, rank_scale

KEYS = frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})
REQUIRED = ({"hada_w1_a"}, {"hada_w1_b"}, {"hada_w2_a"}, {"hada_w2_b"})


@dataclass(frozen=True)
class LohaLayer(AdapterLayer):
    """delta = scale * (w1_a @ w1_b) ⊙ (w2_a @ w2_b); with Tucker cores t1, t2 each product is a core contraction."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    scale: float
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        first = self._product(self.w1_a, self.w1_b, self.t1, weight)
        second = self._product(self.w2_a, self.w2_b, self.t2, weight)
        return self.scale * (first * second)

    @staticmethod
    def _product(a, b, core, weight) -> torch.Tensor:
        a, b = f32(a, weight), f32(b, weight)
        if core is None:
            return fitted(a @ b.reshape(b.shape[0], -1), weight)
        # a: (rank, out), b: (rank, in), core: (rank, rank, kh, kw), as LyCORIS writes the Tucker form.
        product = torch.einsum("i j ..., j r, i p -> p r ...", f32(core, weight), b, a)
        if product.shape != weight.shape:
            raise ValueError("Tucker core does not fit")
        return product


def from_parts(component: str, module: str, parts: dict[str, torch.Tensor], alpha: float | None) -> LohaLayer:
    rank = parts["hada_w1_b"].shape[0]
    return LohaLayer(component, module, parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"],
                     parts["hada_w2_b"], rank_scale(alpha, rank), parts.get("hada_t1"), parts.get("hada_t2"))
