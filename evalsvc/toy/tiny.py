"""Tiny SD1.5- and SDXL-architecture pipelines built from configs (random weights, no download).

They exercise exactly the code paths of real checkpoints: the same diffusers classes, the real
CLIP tokenizer, the same VAE downscale factor (8) and, for SDXL, two text encoders and
micro-conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TinySize:
    """Channel widths of a tiny pipeline; the defaults keep a 64x64 image well under a second on a CPU."""

    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 2
    text_hidden: int = 32
    text_layers: int = 3
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)
    sample_size: int = 8  # latent side; images are 8x larger


def _text_config(size: TinySize, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    kwargs = dict(
        vocab_size=49408,
        hidden_size=size.text_hidden,
        intermediate_size=size.text_hidden * 2,
        num_hidden_layers=size.text_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="quick_gelu",
    )
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(**kwargs)


def _vae(size: TinySize):
    from diffusers import AutoencoderKL

    n = len(size.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=size.sample_size * 8,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # The scheduler config of runwayml/stable-diffusion-v1-5 and SDXL base.
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading",
    )


def build_sd15_pipeline(seed: int = 0, size: TinySize = TinySize()):
    """A StableDiffusionPipeline of SD1.5 architecture with random weights."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=size.sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=size.layers_per_block,
        block_out_channels=size.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (len(size.unet_channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(size.unet_channels) - 1),
        cross_attention_dim=size.text_hidden,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = _vae(size)
    text_encoder = CLIPTextModel(_text_config(size))
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl_pipeline(seed: int = 0, size: TinySize = TinySize()):
    """A StableDiffusionXLPipeline of SDXL architecture (two text encoders, micro-conditioning)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    projection_dim = size.text_hidden
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=size.sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=size.layers_per_block,
        block_out_channels=size.unet_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(size.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(size.unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=size.text_hidden * 2,
        attention_head_dim=(2, 4)[: len(size.unet_channels)],
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=time_embed_dim * 6 + projection_dim,
        norm_num_groups=16,
    )
    vae = _vae(size)
    text_encoder = CLIPTextModel(_text_config(size))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(size, projection_dim=projection_dim))
    tokenizer = clip_tokenizer()
    return StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=clip_tokenizer(), scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
