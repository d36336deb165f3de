"""LoRA adapters on a diffusers pipeline (through PEFT), and their weights in kohya's layout."""

from __future__ import annotations

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def text_components(pipe) -> list[str]:
    return [c for c in ("text_encoder", "text_encoder_2") if getattr(pipe, c, None) is not None]


def add_lora(pipe, rank: int, alpha: float, dropout: float, train_text_encoder: bool) -> dict[str, list]:
    """Attach trainable LoRA adapters; returns the trainable parameters per component."""
    from peft import LoraConfig

    components = ["unet"] + (text_components(pipe) if train_text_encoder else [])
    params = {}
    for component in components:
        model = getattr(pipe, component)
        targets = UNET_TARGETS if component == "unet" else TEXT_TARGETS
        model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                     init_lora_weights="gaussian", target_modules=targets))
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
