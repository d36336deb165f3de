"""The batched denoising loop: many grid cells in one UNet batch, each with its own guidance.

It is the loop of diffusers' StableDiffusion(XL)Pipeline with two changes that make grids fast
and paired: classifier-free guidance takes a per-sample scale, and every cell has its own
generator (see `noise.py`), so a cell's pixels do not depend on its batch neighbours' seeds.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .noise import cell_generator, initial_latents
from .samplers import make_scheduler, resolve_sampler


@dataclass(frozen=True)
class CellSpec:
    """Everything besides the weights that decides a cell's pixels."""

    prompt: str
    negative: str
    seed: int
    cfg: float
    steps: int
    sampler: str
    width: int
    height: int
    clip_skip: int = 1  # A1111 convention: 1 = last layer, 2 = penultimate

    @property
    def batch_group(self) -> tuple:
        """Cells that may share one UNet batch: same schedule and latent size."""
        return (self.steps, resolve_sampler(self.sampler).name, self.width, self.height)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


class PromptCache:
    """Text-encoder outputs per (text-encoder weights, prompt, negative, clip skip).

    `te_state` names the text encoders' current weights (the base, or the base plus a LoRA's
    text-encoder layers); while it is unchanged an encoding is computed once and reused.
    """

    def __init__(self):
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._cache.clear()

    def encode(self, pipe, te_state: str, cell: CellSpec, device) -> tuple[torch.Tensor, ...]:
        key = (te_state, cell.prompt, cell.negative, cell.clip_skip, is_sdxl(pipe))
        if key in self._cache:
            self.hits += 1
            return self._cache[key]
        self.misses += 1
        with torch.no_grad():
            if is_sdxl(pipe):
                # diffusers counts skipped layers beyond SDXL's default penultimate layer; A1111's
                # "Clip skip 1" is none. An empty negative is passed as None so SDXL zeroes it, as
                # diffusers does by default.
                out = pipe.encode_prompt(
                    prompt=cell.prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
                    negative_prompt=cell.negative or None, clip_skip=cell.clip_skip - 1 if cell.clip_skip > 1 else None,
                )
            elif cell.clip_skip == 1:
                out = pipe.encode_prompt(cell.prompt, device, 1, True, negative_prompt=cell.negative or None)
            else:
                out = (_encode_clip_skip(pipe, cell.prompt, cell.clip_skip, device),
                       _encode_clip_skip(pipe, cell.negative, cell.clip_skip, device))
        self._cache[key] = tuple(t.detach() for t in out)
        return self._cache[key]


def _encode_clip_skip(pipe, text: str, clip_skip: int, device) -> torch.Tensor:
    """SD1.x text conditioning as A1111 computes it with clip skip N: the N-th hidden state from the
    end, through the final layer norm. (diffusers' own clip_skip path expects the `text_model`
    attribute that transformers 5 removed.)"""
    encoder = pipe.text_encoder
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
    final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return final_norm(hidden).to(encoder.dtype)


def _step_accepts_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def _sdxl_conditioning(pipe, encoded, cells, dtype, device):
    cond = torch.cat([e[0] for e in encoded])
    uncond = torch.cat([e[1] for e in encoded])
    pooled = torch.cat([e[2] for e in encoded])
    pooled_uncond = torch.cat([e[3] for e in encoded])
    time_ids = torch.tensor([[c.height, c.width, 0, 0, c.height, c.width] for c in cells], dtype=dtype)
    added = {
        "text_embeds": torch.cat([pooled_uncond, pooled]).to(device, dtype),
        "time_ids": torch.cat([time_ids, time_ids]).to(device),
    }
    return torch.cat([uncond, cond]).to(device, dtype), added


def decode_latents(pipe, latents: torch.Tensor):
    """VAE-decode latents to PIL images, as the diffusers pipelines do."""
    vae = pipe.vae
    config = vae.config
    latents = latents.to(vae.dtype)
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    with torch.no_grad():
        images = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")


def denoise(pipe, cells: list[CellSpec], prompt_cache: PromptCache, te_state: str) -> torch.Tensor:
    """Run the sampler for cells that share one batch group; returns the final latents (float32)."""
    if len({c.batch_group for c in cells}) != 1:
        raise ValueError("cells of one batch must share steps, sampler and size")
    first = cells[0]
    unet = pipe.unet
    device, dtype = unet.device, unet.dtype
    spec = resolve_sampler(first.sampler)
    scheduler = make_scheduler(spec, pipe.scheduler.config)
    scheduler.set_timesteps(first.steps, device=device)
    factor = pipe.vae_scale_factor
    generators = [cell_generator(c.seed) for c in cells]
    latents = initial_latents(generators, (unet.config.in_channels, first.height // factor, first.width // factor))
    latents = latents.to(device) * scheduler.init_noise_sigma

    encoded = [prompt_cache.encode(pipe, te_state, c, device) for c in cells]
    if is_sdxl(pipe):
        context, added = _sdxl_conditioning(pipe, encoded, cells, dtype, device)
    else:
        context = torch.cat([torch.cat([e[1] for e in encoded]), torch.cat([e[0] for e in encoded])]).to(device, dtype)
        added = None
    guidance = torch.tensor([c.cfg for c in cells], dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    step_kwargs = {"generator": generators} if _step_accepts_generator(scheduler) else {}

    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise = unet(model_input.to(dtype), t, encoder_hidden_states=context,
                         added_cond_kwargs=added, return_dict=False)[0].float()
            uncond, cond = noise.chunk(2)
            guided = uncond + guidance * (cond - uncond)
            latents = scheduler.step(guided, t, latents, **step_kwargs, return_dict=False)[0]
    return latents


def sample_cells(pipe, cells: list[CellSpec], prompt_cache: PromptCache, te_state: str):
    """PIL images for cells of one batch group, in order."""
    return decode_latents(pipe, denoise(pipe, cells, prompt_cache, te_state))
