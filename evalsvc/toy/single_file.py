"""Write diffusers pipelines as one original-LDM ("A1111 / ComfyUI / civitai") `.safetensors` file.

This is the inverse of diffusers' `loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`), with the
key maps built from the model configs, so the tiny pipelines and real SD1.5 / SDXL sizes both work.
"""

from __future__ import annotations

from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_UNET_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_UNET_TOP_LEVEL = (
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("add_embedding.linear_1.", "label_emb.0.0."),
    ("add_embedding.linear_2.", "label_emb.0.2."),
    ("class_embedding.linear_1.", "label_emb.0.0."),
    ("class_embedding.linear_2.", "label_emb.0.2."),
    ("conv_in.", "input_blocks.0.0."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
)
_VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def is_sdxl(pipe) -> bool:
    """True for pipelines with a second text encoder (SDXL)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def unet_block_map(config) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM/SGM prefix, is_resnet) for every UNet block, derived from the config.

    input_blocks index = 1 + block*(layers_per_block+1) + layer (sub-index 0 resnet, 1 attention);
    middle_block.0/1/2 = resnet, attention, resnet; output_blocks index = block*(layers_per_block+1) + layer.
    """
    layers = config.layers_per_block
    if not isinstance(layers, int):
        raise ValueError(f"per-block layers_per_block {layers!r} has no single LDM layout")
    n_blocks = len(config.down_block_types)
    rows: list[tuple[str, str, bool]] = []
    for b, kind in enumerate(config.down_block_types):
        for j in range(layers):
            i = 1 + b * (layers + 1) + j
            rows.append((f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0.", True))
            if "CrossAttn" in kind:
                rows.append((f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1.", False))
        if b < n_blocks - 1:
            rows.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{(b + 1) * (layers + 1)}.0.op.", False))
    rows += [
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
    ]
    for b, kind in enumerate(config.up_block_types):
        attention = "CrossAttn" in kind
        for j in range(layers + 1):
            i = b * (layers + 1) + j
            rows.append((f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{i}.0.", True))
            if attention:
                rows.append((f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{i}.1.", False))
        if b < n_blocks - 1:
            last = b * (layers + 1) + layers
            rows.append((f"up_blocks.{b}.upsamplers.0.", f"output_blocks.{last}.{2 if attention else 1}.", False))
    return rows


def _rename_prefix(key: str, pairs) -> str | None:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel weights under LDM keys (without the `model.diffusion_model.` prefix)."""
    blocks = unet_block_map(unet.config)
    out = {}
    for key, value in unet.state_dict().items():
        new = _rename_prefix(key, _UNET_TOP_LEVEL)
        if new is None:
            for old_prefix, new_prefix, is_resnet in blocks:
                if key.startswith(old_prefix):
                    rest = key[len(old_prefix):]
                    if is_resnet:
                        rest = _rename_prefix(rest, _UNET_RESNET_RENAMES) or rest
                    new = new_prefix + rest
                    break
        if new is None:
            raise ValueError(f"UNet key {key!r} has no LDM equivalent")
        out[new] = value
    return out


def _vae_block_map(config) -> list[tuple[str, str]]:
    n = len(config.block_out_channels)
    rows = []
    for i in range(n):
        rows.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        rows.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        rows.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
        rows.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    for part in ("encoder", "decoder"):
        rows += [
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."),
            (f"{part}.conv_norm_out.", f"{part}.norm_out."),
        ]
    return rows


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    """AutoencoderKL weights under LDM keys; attention projections become 1x1 conv weights."""
    rows = _vae_block_map(vae.config)
    out = {}
    for key, value in vae.state_dict().items():
        new = _rename_prefix(key, rows) or key
        if ".mid.attn_1." in new:
            head, tail = new.split(".mid.attn_1.")
            new = f"{head}.mid.attn_1.{_rename_prefix(tail, _VAE_ATTENTION_RENAMES) or tail}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        else:
            new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out[new] = value
    return out


def clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel weights as `text_model.*` keys (the layout under `...transformer.`)."""
    flattened = not hasattr(text_encoder, "text_model")
    return {(f"text_model.{k}" if flattened else k): v for k, v in text_encoder.state_dict().items()}


def open_clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights in OpenCLIP layout (SDXL's second text encoder)."""
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T.contiguous(),
    }
    for i in range(text_encoder.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for old, new in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{dst}{new}.{kind}"] = sd.pop(f"{src}{old}.{kind}")
    if sd:
        raise ValueError(f"text encoder keys with no OpenCLIP equivalent: {sorted(sd)}")
    return out


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """All weights of an SD1.x or SDXL pipeline under the prefixed keys of an original checkpoint."""
    parts = [(UNET_PREFIX, unet_to_ldm(pipe.unet)), (VAE_PREFIX, vae_to_ldm(pipe.vae))]
    if is_sdxl(pipe):
        parts += [(SDXL_CLIP_PREFIX, clip_to_ldm(pipe.text_encoder)),
                  (SDXL_OPEN_CLIP_PREFIX, open_clip_to_ldm(pipe.text_encoder_2))]
    else:
        parts.append((SD1_CLIP_PREFIX, clip_to_ldm(pipe.text_encoder)))
    return {prefix + k: v.detach().contiguous() for prefix, sd in parts for k, v in sd.items()}


def write_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> Path:
    """Save `tensors` (made contiguous) with string-only header metadata, creating parent folders."""
    from safetensors.torch import save_file

    bad = {k: type(v).__name__ for k, v in (metadata or {}).items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise TypeError(f"safetensors metadata keys and values must be strings; got {bad}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or None)
    return path


def save_single_file(pipe, path, metadata: dict[str, str] | None = None) -> Path:
    """Write `pipe` (StableDiffusionPipeline or StableDiffusionXLPipeline) as one LDM-format checkpoint.

    Default metadata: `modelspec.architecture` and `modelspec.title`; `metadata` overrides and extends it.
    """
    arch = "stable-diffusion-xl-v1-base" if is_sdxl(pipe) else "stable-diffusion-v1"
    meta = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": arch,
            "modelspec.title": Path(path).stem, **(metadata or {})}
    return write_safetensors(ldm_state_dict(pipe), path, meta)


def save_unet_only(pipe, path, layout: str = "diffusers", metadata: dict[str, str] | None = None) -> Path:
    """Write only the UNet: `layout="diffusers"` (unet.state_dict() keys) or `"ldm"` (`model.diffusion_model.*`)."""
    if layout == "diffusers":
        tensors = pipe.unet.state_dict()
    elif layout == "ldm":
        tensors = {UNET_PREFIX + k: v for k, v in unet_to_ldm(pipe.unet).items()}
    else:
        raise ValueError(f"layout must be 'diffusers' or 'ldm', got {layout!r}")
    return write_safetensors(tensors, path, metadata)
