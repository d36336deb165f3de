"""Realistic LoRA files for the tiny pipelines: kohya sd-scripts and diffusers/PEFT layouts.

`tensors` everywhere is `{component: {module_name: (down, up, alpha)}}` with diffusers module names
(as in `pipe.<component>.named_modules()`); the effective change of a module's weight is
`(alpha / rank) * up @ down` (1x1 conv weights flattened to matrices).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import torch

from .single_file import is_sdxl, unet_block_map, write_safetensors

LoraTensors = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor, float]]]

_UNET_TARGETS = (".to_q", ".to_k", ".to_v", ".to_out.0", ".proj_in", ".proj_out", ".ff.net.0.proj", ".ff.net.2")
_TEXT_TARGETS = (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj",
                 ".mlp.fc1", ".mlp.fc2")
_STEPS_PER_EPOCH = 10
_FIXED_START_TIME = 1_700_000_000  # fake but fixed: reruns write the same metadata


def _components(pipe) -> dict[str, torch.nn.Module]:
    names = ["unet", "text_encoder"] + (["text_encoder_2"] if is_sdxl(pipe) else [])
    return {name: getattr(pipe, name) for name in names}


def lora_targets(pipe) -> dict[str, list[str]]:
    """Module names a kohya/diffusers LoRA trains, per component, in model order."""
    out = {}
    for component, model in _components(pipe).items():
        suffixes = _UNET_TARGETS if component == "unet" else _TEXT_TARGETS
        out[component] = [
            name for name, module in model.named_modules()
            if name.endswith(suffixes) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
        ]
    return out


def _in_out(module) -> tuple[int, int, bool]:
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features, False
    if module.kernel_size != (1, 1):
        raise ValueError(f"only 1x1 convolutions get a LoRA here, got kernel {module.kernel_size}")
    return module.in_channels, module.out_channels, True


def random_lora_tensors(pipe, rank: int = 4, alpha: float | None = None, seed: int = 0, scale: float = 0.1,
                        zero_up: bool = False, include_text_encoder: bool = True) -> LoraTensors:
    """Deterministic random LoRA weights for every target module; `alpha=None` means 1.0 (kohya's default).

    down ~ N(0, scale²) of shape (rank, in) and up (out, rank), with trailing (1, 1) for 1x1 convs;
    `zero_up=True` makes every up weight exactly zero, i.e. a LoRA that changes nothing.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    alpha = 1.0 if alpha is None else float(alpha)
    gen = torch.Generator().manual_seed(seed)
    out: LoraTensors = {}
    for component, names in lora_targets(pipe).items():
        if component != "unet" and not include_text_encoder:
            continue
        model = getattr(pipe, component)
        out[component] = {}
        for name in names:
            n_in, n_out, conv = _in_out(model.get_submodule(name))
            tail = (1, 1) if conv else ()
            down = torch.randn((rank, n_in, *tail), generator=gen) * scale
            up = torch.randn((n_out, rank, *tail), generator=gen) * scale
            out[component][name] = (down, torch.zeros_like(up) if zero_up else up, alpha)
    return out


def lora_delta(down: torch.Tensor, up: torch.Tensor, alpha: float) -> torch.Tensor:
    """The weight change `(alpha / rank) * up @ down`, shaped like the target weight."""
    rank = down.shape[0]
    delta = (alpha / rank) * (up.flatten(1) @ down.flatten(1))
    return delta.reshape(up.shape[0], *down.shape[1:])


def _sgm_prefixes(unet) -> list[tuple[str, str]]:
    return [(d, s) for d, s, is_resnet in unet_block_map(unet.config) if not is_resnet]


def kohya_lora_name(component: str, module: str, *, sdxl: bool, sgm_prefixes=None) -> str:
    """kohya's name for a module: prefix + module path with `.` replaced by `_`.

    `sgm_prefixes` ((diffusers prefix, SGM prefix) pairs) renames UNet blocks to SGM names (kohya's SDXL).
    Text encoder paths always start with `text_model.`, as in kohya (transformers' unflattened CLIP).
    """
    if component == "unet":
        prefix = "lora_unet_"
        for old, new in sgm_prefixes or ():
            if module.startswith(old):
                module = new + module[len(old):]
                break
    elif component in ("text_encoder", "text_encoder_2"):
        prefix = {"text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}[component]
        module = module if module.startswith("text_model.") else f"text_model.{module}"
    else:
        raise ValueError(f"unknown LoRA component {component!r}")
    return prefix + module.replace(".", "_")


def _common(values):
    return collections.Counter(values).most_common(1)[0][0]


def _base_name(path: Path) -> str:
    return re.sub(r"-(\d{6}|step\d{8})$", "", path.stem)


def _default_kohya_metadata(pipe, tensors: LoraTensors, path: Path) -> dict[str, str]:
    sdxl = is_sdxl(pipe)
    entries = [t for mods in tensors.values() for t in mods.values()]
    name = _base_name(path)
    tags = {name: 10, "1girl": 8, "solo": 7, "red eyes": 5, "smile": 3}
    resolution = (1024, 1024) if sdxl else (512, 512)
    return {
        "ss_session_id": str(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)),
        "ss_output_name": name,
        "ss_training_started_at": str(float(_FIXED_START_TIME)),
        "ss_training_finished_at": str(float(_FIXED_START_TIME + 60)),
        "ss_epoch": "1",
        "ss_steps": str(_STEPS_PER_EPOCH),
        "ss_num_epochs": "1",
        "ss_max_train_steps": str(_STEPS_PER_EPOCH),
        "ss_learning_rate": "0.0001",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_lr_scheduler": "cosine",
        "ss_lr_warmup_steps": "0",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(_common(d.shape[0] for d, _, _ in entries)) if entries else "None",
        "ss_network_alpha": str(float(_common(a for _, _, a in entries))) if entries else "None",
        "ss_num_train_images": "10",
        "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
        "ss_clip_skip": "None" if sdxl else "2",
        "ss_mixed_precision": "fp16",
        "ss_seed": "42",
        "ss_noise_offset": "None",
        "ss_min_snr_gamma": "None",
        "ss_resolution": str(resolution),
        "ss_sd_model_name": "tiny-sdxl.safetensors" if sdxl else "tiny-sd15.safetensors",
        "ss_tag_frequency": json.dumps({f"10_{name}": tags}),
        "ss_datasets": json.dumps([{
            "is_dreambooth": True, "batch_size_per_device": 1, "num_train_images": 10, "num_reg_images": 0,
            "resolution": list(resolution), "enable_bucket": True,
            "subsets": [{"image_dir": f"10_{name}", "num_repeats": 10, "class_tokens": name}],
            "tag_frequency": {f"10_{name}": tags},
        }]),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora" if sdxl else "stable-diffusion-v1/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if sdxl else "diffusers",
        "modelspec.title": name,
        "modelspec.resolution": "{}x{}".format(*resolution),
    }


def safetensors_data_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the bytes after the safetensors header (kohya's `sshs_model_hash`; A1111 shows 12 digits)."""
    from safetensors.torch import save

    blob = save(tensors)
    return hashlib.sha256(blob[8 + int.from_bytes(blob[:8], "little"):]).hexdigest()


def kohya_state_dict(pipe, tensors: LoraTensors, sgm_names: bool | None = None) -> dict[str, torch.Tensor]:
    """`tensors` under kohya's keys: `<name>.lora_down.weight`, `.lora_up.weight` and a scalar `.alpha`.

    `sgm_names` (default: True for SDXL, False for SD1) names UNet blocks as SGM `input_blocks.N.1` etc.,
    as kohya does for SDXL.
    """
    sdxl = is_sdxl(pipe)
    use_sgm = sdxl if sgm_names is None else sgm_names
    sgm = _sgm_prefixes(pipe.unet) if use_sgm else None
    out: dict[str, torch.Tensor] = {}
    for component, modules in tensors.items():
        for module, (down, up, alpha) in modules.items():
            key = kohya_lora_name(component, module, sdxl=sdxl, sgm_prefixes=sgm)
            out[f"{key}.lora_down.weight"] = down.contiguous()
            out[f"{key}.lora_up.weight"] = up.contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


def save_kohya_lora(pipe, tensors: LoraTensors, path, metadata: dict[str, str] | None = None,
                    sgm_names: bool | None = None) -> Path:
    """Write a kohya sd-scripts LoRA (`lora_unet_*`, `lora_te_*` / `lora_te1_*` / `lora_te2_*` keys).

    `sgm_names` (default: True for SDXL, False for SD1) names UNet blocks as SGM `input_blocks.N.1` etc.,
    as kohya does for SDXL; diffusers maps those back only for SDXL pipelines. Default `ss_*` and
    `modelspec.*` metadata, with `sshs_model_hash`, are overridden by `metadata`.
    """
    out = kohya_state_dict(pipe, tensors, sgm_names)
    meta = {**_default_kohya_metadata(pipe, tensors, Path(path)),
            "sshs_model_hash": safetensors_data_sha256(out), **(metadata or {})}
    return write_safetensors(out, path, meta)


def _peft_config(modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> dict:
    ranks = {name: int(down.shape[0]) for name, (down, _, _) in modules.items()}
    alphas = {name: float(alpha) for name, (_, _, alpha) in modules.items()}
    r, lora_alpha = _common(ranks.values()), _common(alphas.values())
    return {
        "r": r,
        "lora_alpha": lora_alpha,
        "target_modules": sorted(modules),
        "rank_pattern": {k: v for k, v in ranks.items() if v != r},
        "alpha_pattern": {k: v for k, v in alphas.items() if v != lora_alpha},
    }


def save_peft_lora(pipe, tensors: LoraTensors, path, metadata: dict[str, str] | None = None) -> Path:
    """Write a diffusers/PEFT LoRA (`unet.<module>.lora_A.weight` = down, `.lora_B.weight` = up).

    Alpha travels as diffusers' `save_lora_weights` writes it: the `lora_adapter_metadata` header entry
    (JSON of `<component>.r`, `.lora_alpha`, `.target_modules`, ...), which `load_lora_weights` reads.
    Readers that ignore that entry see scale 1 (alpha == rank).
    """
    out: dict[str, torch.Tensor] = {}
    adapter_meta = {}
    for component, modules in tensors.items():
        if not modules:
            continue
        for module, (down, up, _) in modules.items():
            out[f"{component}.{module}.lora_A.weight"] = down
            out[f"{component}.{module}.lora_B.weight"] = up
        adapter_meta.update({f"{component}.{k}": v for k, v in _peft_config(modules).items()})
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(adapter_meta, indent=2, sort_keys=True),
            **(metadata or {})}
    return write_safetensors(out, path, meta)


def write_kohya_epochs(pipe, out_dir, name: str = "mychar", epochs: int = 3, rank: int = 4, seed: int = 0,
                       metadata: dict[str, str] | None = None, sgm_names: bool | None = None, **kw) -> list[Path]:
    """Write `{name}-{epoch:06d}.safetensors` for epochs 1..N, as one kohya run (shared `ss_session_id`).

    Each epoch gets different random weights; `kw` goes to `random_lora_tensors` (alpha, scale, ...).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    paths = []
    for epoch in range(1, epochs + 1):
        tensors = random_lora_tensors(pipe, rank=rank, seed=seed * 10_007 + epoch, **kw)
        run_meta = {
            "ss_session_id": str(int(hashlib.sha256(f"{name}:{seed}".encode()).hexdigest()[:8], 16)),
            "ss_epoch": str(epoch),
            "ss_steps": str(epoch * _STEPS_PER_EPOCH),
            "ss_num_epochs": str(epochs),
            "ss_max_train_steps": str(epochs * _STEPS_PER_EPOCH),
            "ss_training_finished_at": str(float(_FIXED_START_TIME + 60 * epoch)),
            "ss_seed": str(seed),
        }
        path = Path(out_dir) / f"{name}-{epoch:06d}.safetensors"
        paths.append(save_kohya_lora(pipe, tensors, path, {**run_meta, **(metadata or {})}, sgm_names=sgm_names))
    return paths
