"""What the trainer trains: LoRA adapters (through PEFT) or the whole model, and how each is saved.

`make_network(config.network)` gives one of two objects with the same face: `attach(pipe, lr)` makes
the right parameters trainable and returns optimizer groups, `state_dict(pipe)` the tensors of an epoch
file (kohya's LoRA keys, or an original-LDM single file for a full finetune), and `metadata()` the
`ss_*` keys that describe the network.
"""

from __future__ import annotations

import torch

from evalsvc.toy.lora_files import kohya_state_dict
from evalsvc.toy.single_file import ldm_state_dict

from .config import NetworkConfig

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def text_components(pipe) -> list[str]:
    return [c for c in ("text_encoder", "text_encoder_2") if getattr(pipe, c, None) is not None]


def add_lora(pipe, rank: int, alpha: float, dropout: float, train_text_encoder: bool) -> dict[str, list]:
    """Attach trainable LoRA adapters; returns the trainable parameters per component.

    Through PEFT's own `inject_adapter_in_model`, not transformers'/diffusers' `add_adapter`: those wrap
    the same call in version gates of their own (transformers 5.24 refuses peft < 0.22).
    """
    from peft import LoraConfig, inject_adapter_in_model

    components = ["unet"] + (text_components(pipe) if train_text_encoder else [])
    params = {}
    for component in components:
        model = getattr(pipe, component)
        targets = UNET_TARGETS if component == "unet" else TEXT_TARGETS
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                           init_lora_weights="gaussian", target_modules=targets), model)
        params[component] = [p for n, p in model.named_parameters() if "lora_" in n]
        for p in params[component]:
            p.requires_grad_(True)
    return params


def lora_tensors(pipe, alpha: float) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]:
    """`{component: {module: (down, up, alpha)}}` of the attached adapters, detached float32 copies."""
    out: dict[str, dict] = {}
    for component in ["unet"] + text_components(pipe):
        for name, module in getattr(pipe, component).named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is None or "default" not in lora_a:
                continue
            down = lora_a["default"].weight.detach().float().cpu().clone()
            up = module.lora_B["default"].weight.detach().float().cpu().clone()
            out.setdefault(component, {})[name] = (down, up, alpha)
    return out


def _groups(params: dict[str, list], config: NetworkConfig, learning_rate: float) -> list[dict]:
    """One optimizer group per trained component, each at its own learning rate."""
    groups = [{"params": params["unet"], "lr": config.unet_lr or learning_rate}]
    for component in ("text_encoder", "text_encoder_2"):
        if component in params:
            groups.append({"params": params[component], "lr": config.text_encoder_lr or learning_rate})
    return groups


class _Network:
    def __init__(self, config: NetworkConfig):
        self.config = config

    def trained_components(self, pipe) -> list[str]:
        return ["unet"] + (text_components(pipe) if self.config.train_text_encoder else [])


class LoraNetwork(_Network):
    """Low-rank adapters on the UNet (and optionally the text encoders); saved with kohya's keys."""

    def __init__(self, config: NetworkConfig):
        super().__init__(config)
        self.alpha = float(config.alpha if config.alpha is not None else config.rank)

    def attach(self, pipe, learning_rate: float) -> list[dict]:
        params = add_lora(pipe, self.config.rank, self.alpha, self.config.dropout, self.config.train_text_encoder)
        return _groups(params, self.config, learning_rate)

    def state_dict(self, pipe) -> dict[str, torch.Tensor]:
        return kohya_state_dict(pipe, lora_tensors(pipe, self.alpha))

    def metadata(self) -> dict[str, str]:
        return {"ss_network_module": "networks.lora", "ss_network_dim": str(self.config.rank),
                "ss_network_alpha": str(self.alpha), "ss_network_dropout": str(self.config.dropout)}

    def model_spec(self, arch: str) -> str:
        return "stable-diffusion-xl-v1-base/lora" if arch == "sdxl" else "stable-diffusion-v1/lora"


class FullNetwork(_Network):
    """Every UNet weight (and optionally the text encoders'); saved as an original-LDM single file."""

    def attach(self, pipe, learning_rate: float) -> list[dict]:
        params = {}
        for component in self.trained_components(pipe):
            model = getattr(pipe, component)
            model.requires_grad_(True)
            params[component] = [p for p in model.parameters()]
        return _groups(params, self.config, learning_rate)

    def state_dict(self, pipe) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu() for k, v in ldm_state_dict(pipe).items()}

    def metadata(self) -> dict[str, str]:
        return {}

    def model_spec(self, arch: str) -> str:
        return "stable-diffusion-xl-v1-base" if arch == "sdxl" else "stable-diffusion-v1"


def make_network(config: NetworkConfig) -> LoraNetwork | FullNetwork:
    return FullNetwork(config) if config.kind == "full" else LoraNetwork(config)
