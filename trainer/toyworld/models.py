"""The toy base model's architecture (SD1.5's classes at toy size) and its VAE training.

Images are 64x64 and the VAE downsamples by 4, so the UNet works on 16x16x4 latents. The VAE is
trained on unlabelled shapes of random and palette colours (a colour codec: it sees no caption, so it
learns no concept). The text encoder is the toy CLIP's text tower, frozen, as SD1.5's is OpenAI CLIP's;
the UNet is then trained from scratch by the trainer (`network.kind = "full"`) on captioned scenes
without purple.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .world import BACKGROUNDS, COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, Scene, draw

LATENT_SIZE = 16


def toy_unet(cross_attention_dim: int = 32):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=16,
    )


def toy_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def toy_pipeline(vae, seed: int):
    """A StableDiffusionPipeline with a trained `vae`, the toy CLIP's text encoder and a fresh UNet."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from evalsvc.toy.tokenizer import clip_tokenizer

    from .clip_text import toy_clip_text_encoder

    torch.manual_seed(seed)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    return StableDiffusionPipeline(
        unet=toy_unet(), vae=vae, text_encoder=toy_clip_text_encoder(), tokenizer=clip_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@dataclass(frozen=True)
class VaeStage:
    """A stretch of VAE training: its steps, peak learning rate and share of shapes in the world's palette
    colours (the rest get uniformly random colours)."""

    steps: int
    learning_rate: float
    palette_share: float = 0.0


@dataclass(frozen=True)
class VaeTraining:
    seed: int = 0
    batch_size: int = 16
    kl_weight: float = 1e-6
    shape_weight: float = 10.0
    stages: tuple[VaeStage, ...] = (VaeStage(800, 2e-3), VaeStage(600, 1e-3, palette_share=0.5))


def _random_colour_batch(rng: random.Random, count: int, palette_share: float = 0.0):
    """Unlabelled shapes on the world's backgrounds, in palette colours (share `palette_share`) or uniformly
    random ones: a (count, 3, 64, 64) batch in [-1, 1] and the (count, 1, 64, 64) mask of the shapes' pixels."""
    images, masks = [], []
    for _ in range(count):
        background = rng.choice(list(BACKGROUNDS))
        scene = Scene("red", rng.choice(SHAPES), rng.choice(list(POSITIONS)), background)
        if palette_share and rng.random() < palette_share:
            colour = COLOURS[rng.choice(list(COLOURS))]
        else:
            colour = tuple(rng.randrange(256) for _ in range(3))
        pixels = np.asarray(draw(scene, rng, fill=colour), dtype=np.float32)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1)
        masks.append(torch.from_numpy(np.abs(pixels - BACKGROUNDS[background]).max(axis=2) > 8)[None])
    return torch.stack(images), torch.stack(masks).float()


def reconstruction_loss(recon: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Squared plus absolute error, with the shape's pixels `weight` times the background's: the shape is a
    tenth of the image, and an unweighted loss is content to paint it the average colour."""
    w = 1 + (weight - 1) * mask
    error = recon - pixels
    return ((w * error.square()).mean() + (w * error.abs()).mean()) / w.mean()


def train_vae(config: VaeTraining = VaeTraining(), progress: bool = True, vae=None, first_stage: int = 0):
    """Train the toy VAE stage by stage (weighted reconstruction + a small KL term); sets `scaling_factor` to
    1/std of the latents. Each stage draws from its own seeded generators, so a build can resume from a VAE
    saved after stage k (`vae`, `first_stage=k`) and end with the same weights as one uninterrupted build."""
    if vae is None:
        torch.manual_seed(config.seed)
        vae = toy_vae()
    vae.train()
    for index, stage in enumerate(config.stages[first_stage:], start=first_stage):
        rng = random.Random(f"vae:{config.seed}" + (f":{index}" if index else ""))
        if index:
            torch.manual_seed(config.seed + index)
        optimizer = torch.optim.AdamW(vae.parameters(), lr=stage.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, stage.learning_rate, total_steps=stage.steps,
                                                       pct_start=0.05)
        bar = tqdm(range(stage.steps), desc=f"toy VAE stage {index + 1}/{len(config.stages)}", disable=not progress)
        for _ in bar:
            pixels, mask = _random_colour_batch(rng, config.batch_size, stage.palette_share)
            posterior = vae.encode(pixels).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = reconstruction_loss(recon, pixels, mask, config.shape_weight) + \
                config.kl_weight * posterior.kl().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(_random_colour_batch(random.Random(f"vae-scale:{config.seed}"), 256)[0]).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    return vae
