"""Exponential moving average of a set of parameters (LoRA weights or a full UNet).

The EMA keeps one float32 shadow tensor per tracked parameter, on that parameter's device
(as it was when the EMA was built). The trainer calls ``step(global_step)`` after each
optimizer step; ``swapped_in()`` puts the EMA weights into the live parameters for saving an
EMA checkpoint and restores the raw weights bit-exactly afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor

Params = Iterable[torch.nn.Parameter] | Mapping[str, Tensor]


def _named(params: Params) -> dict[str, Tensor]:
    """Name the tensors: a mapping keeps its keys, an iterable is numbered "0", "1", ..."""
    if isinstance(params, Mapping):
        return {str(name): tensor for name, tensor in params.items()}
    return {str(i): tensor for i, tensor in enumerate(params)}


class EMA:
    """Exponential moving average: ``shadow = decay * shadow + (1 - decay) * param``.

    ``decay`` is applied per *update*, not per training step: with ``update_every=N`` the shadow
    is updated once every N steps (when ``global_step % N == 0``) with the same ``decay``, so its
    horizon is about ``N / (1 - decay)`` training steps. The shadows start as float32 copies of
    the parameters' values at construction time.
    """

    def __init__(self, parameters: Params, decay: float, update_every: int = 1):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be an integer >= 1, got {update_every!r}")
        named = _named(parameters)
        if not named:
            raise ValueError("EMA needs at least one parameter to track")
        for name, tensor in named.items():
            if not torch.is_floating_point(tensor):
                raise ValueError(f"parameter {name!r} is {tensor.dtype}; EMA tracks floating-point tensors only")
        self.decay = float(decay)
        self.update_every = update_every
        self.num_updates = 0
        self._params = named
        self.shadow: dict[str, Tensor] = {
            name: t.detach().to(dtype=torch.float32, copy=True) for name, t in named.items()
        }

    @torch.no_grad()
    def step(self, global_step: int) -> bool:
        """Update the shadows from the tracked parameters if ``global_step % update_every == 0``.

        Returns whether an update happened.
        """
        if global_step % self.update_every != 0:
            return False
        for name, param in self._params.items():
            self.shadow[name].mul_(self.decay).add_(param.detach().to(torch.float32), alpha=1.0 - self.decay)
        self.num_updates += 1
        return True

    def state_dict(self) -> dict:
        """Decay, update period, update count and the shadow tensors (references, not copies)."""
        return {
            "decay": self.decay,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
            "shadow": dict(self.shadow),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        """Restore shadows and update count; refuses other names, shapes, decay or update period."""
        if float(state["decay"]) != self.decay or int(state["update_every"]) != self.update_every:
            raise ValueError(
                f"EMA state has decay={state['decay']}, update_every={state['update_every']}; "
                f"this EMA has decay={self.decay}, update_every={self.update_every}"
            )
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(shadow))
            extra = sorted(set(shadow) - set(self.shadow))
            raise ValueError(f"EMA state does not match the tracked parameters: missing {missing}, unexpected {extra}")
        for name, value in shadow.items():
            if tuple(value.shape) != tuple(self.shadow[name].shape):
                raise ValueError(
                    f"EMA state {name!r} has shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}"
                )
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(state["num_updates"])

    def _targets(self, params: Params | None) -> dict[str, Tensor]:
        targets = self._params if params is None else _named(params)
        if set(targets) != set(self.shadow):
            raise ValueError(
                f"parameters do not match the EMA: got {len(targets)} named {sorted(targets)[:5]}..., "
                f"expected {len(self.shadow)}"
            )
        for name, tensor in targets.items():
            if tuple(tensor.shape) != tuple(self.shadow[name].shape):
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(tensor.shape)}, EMA has {tuple(self.shadow[name].shape)}"
                )
        return targets

    @torch.no_grad()
    def copy_to(self, params: Params | None = None) -> None:
        """Write the EMA weights into ``params`` (default: the tracked parameters), in their dtype."""
        for name, tensor in self._targets(params).items():
            tensor.copy_(self.shadow[name])

    @contextmanager
    def swapped_in(self, params: Params | None = None) -> Iterator[None]:
        """Temporarily put the EMA weights into ``params``; the raw values come back exactly on exit."""
        targets = self._targets(params)
        with torch.no_grad():
            backup = {name: tensor.detach().clone() for name, tensor in targets.items()}
            for name, tensor in targets.items():
                tensor.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in targets.items():
                    tensor.copy_(backup[name])
