"""The training loop (LoRA or full finetune): yields its progress; saves raw and EMA weights every epoch.

Called as `evalsvc train CONFIG.toml` or from tests with a `TrainConfig`. Mixed precision and
gradient accumulation go through accelerate. With a sink (`trainer.sinks`: a store, or the app that
owns it), every saved epoch is registered there with the base model and the step-wise loss, and its
evaluation grid (`[eval] suite`) queued; the trainer has no sampler of its own.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from evalsvc.errors import InputError

from .config import TrainConfig
from .dataset import ImageDataset, bucket_batches
from .ema import EMA
from .network import make_network
from .noise import min_snr_weights, offset_noise
from .save import write_atomically
from .schedules import make_lr_scheduler, make_optimizer


@dataclass
class TrainEvent:
    kind: str  # "step" | "epoch" | "done"
    epoch: int = 0
    step: int = 0
    loss: float = 0.0
    lr: float = 0.0
    paths: list[Path] = field(default_factory=list)


def _load_base(config: TrainConfig):
    import diffusers

    base = Path(config.model.base)
    index = base / "model_index.json"
    if not index.exists():
        raise InputError(f"model.base = {str(base)!r}: the trainer needs a diffusers folder (with model_index.json)")
    cls_name = json.loads(index.read_text())["_class_name"]
    arch = "sdxl" if "XL" in cls_name else "sd15"
    if config.model.arch not in (None, arch):
        raise InputError(f"model.arch = {config.model.arch!r}, but {base} is {arch}")
    cls = diffusers.StableDiffusionXLPipeline if arch == "sdxl" else diffusers.StableDiffusionPipeline
    extra = {} if arch == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    return cls.from_pretrained(base, **extra), arch


def _encode(pipe, captions: list[str], buckets: list[tuple[int, int]], device):
    """Text conditioning as the deployment pipeline computes it (SDXL: both encoders, pooled, time ids)."""
    if getattr(pipe, "text_encoder_2", None) is None:
        embeds, _ = pipe.encode_prompt(captions, device, 1, False)
        return embeds, None
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    time_ids = torch.tensor([[h, w, 0, 0, h, w] for w, h in buckets], dtype=embeds.dtype, device=device)
    return embeds, {"text_embeds": pooled, "time_ids": time_ids}


def _metadata(config: TrainConfig, network, arch: str, session: str, epoch: int, step: int, ema: bool,
              dataset: ImageDataset, started: float) -> dict[str, str]:
    net, train = config.network, config.train
    resolution = config.dataset.resolution
    return {
        "ss_session_id": session,
        "ss_output_name": train.output_name,
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_num_epochs": str(train.epochs),
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(time.time()),
        "ss_learning_rate": str(train.learning_rate),
        "ss_unet_lr": str(net.unet_lr or train.learning_rate),
        "ss_text_encoder_lr": str(net.text_encoder_lr or train.learning_rate) if net.train_text_encoder else "None",
        "ss_optimizer": train.optimizer,
        "ss_lr_scheduler": train.scheduler,
        "ss_lr_warmup_steps": str(train.warmup_steps),
        **network.metadata(),
        "ss_num_train_images": str(dataset.counts.images),
        "ss_base_model_version": "sdxl_base_v1-0" if arch == "sdxl" else "sd_v1",
        "ss_mixed_precision": train.mixed_precision,
        "ss_seed": str(train.seed),
        "ss_noise_offset": str(train.noise_offset) if train.noise_offset else "None",
        "ss_min_snr_gamma": str(train.min_snr_gamma) if train.min_snr_gamma else "None",
        "ss_resolution": str((resolution, resolution)),
        "ss_sd_model_name": Path(config.model.base).name,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": network.model_spec(arch),
        "modelspec.title": train.output_name,
        "evalsvc.ema": "true" if ema else "false",
        "evalsvc.config": json.dumps(config.to_dict()),
    }


def checkpoint_path(config: TrainConfig, epoch: int, ema: bool) -> Path:
    """kohya's per-epoch name; EMA files carry an `ema` token: `name-ema-000003.safetensors`."""
    stem = f"{config.train.output_name}-ema" if ema else config.train.output_name
    return Path(config.train.output_dir) / f"{stem}-{epoch:06d}.safetensors"


def train(config: TrainConfig, sink=None) -> Iterator[TrainEvent]:
    """Train as `config` says; yields each optimizer step and each saved epoch, which goes to `sink`
    (`trainer.sinks`: a store or the app) when given."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision,
                              gradient_accumulation_steps=config.train.gradient_accumulation,
                              cpu=not torch.cuda.is_available())
    torch.manual_seed(config.train.seed)
    dataset = ImageDataset.from_config(config.dataset, seed=config.train.seed)
    pipe, arch = _load_base(config)
    pipe.set_progress_bar_config(disable=True)
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, component, None) is not None:
            getattr(pipe, component).requires_grad_(False)
    network = make_network(config.network)
    groups = network.attach(pipe, config.train.learning_rate)
    trainable = [p for g in groups for p in g["params"]]
    if config.train.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()

    batches_per_epoch = len(bucket_batches(dataset, config.train.batch_size, config.train.seed, 1))
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.gradient_accumulation)
    total_steps = steps_per_epoch * config.train.epochs
    if config.train.warmup_steps > total_steps:
        raise InputError(f"train.warmup_steps = {config.train.warmup_steps} is more than the run's {total_steps} "
                         f"optimizer steps ({steps_per_epoch} per epoch x {config.train.epochs} epochs)")
    optimizer = make_optimizer(groups, config.train.optimizer, config.train.learning_rate)
    scheduler = make_lr_scheduler(optimizer, config.train.scheduler, config.train.warmup_steps, total_steps,
                                  config.train.restarts)
    unet, optimizer, scheduler = accelerator.prepare(pipe.unet, optimizer, scheduler)
    for component in network.trained_components(pipe):
        getattr(pipe, component).train()
    device = accelerator.device
    pipe.to(device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    alphas_cumprod = noise_scheduler.alphas_cumprod
    ema = EMA({f"{i}": p for i, p in enumerate(trainable)}, config.ema.decay, config.ema.update_every) \
        if config.ema.enabled else None
    generator = torch.Generator().manual_seed(config.train.seed)
    encoder = _LatentEncoder(pipe.vae, dataset, device, cache=config.dataset.cache_latents)
    session, started, step = str(uuid.uuid4().int % 10**10), time.time(), 0
    losses = []

    for epoch in range(1, config.train.epochs + 1):
        for batch in bucket_batches(dataset, config.train.batch_size, config.train.seed, epoch):
            items = [dataset.get(k, epoch) for k in batch]
            latents = encoder.latents(batch, items, generator) * pipe.vae.config.scaling_factor
            noise = offset_noise(latents.shape, config.train.noise_offset, generator).to(device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(items),), generator=generator)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps.to(device))
            with accelerator.accumulate(unet):
                context, added = _encode(pipe, [item["caption"] for item in items], [item["bucket"] for item in items],
                                         device)
                pred = unet(noisy, timesteps.to(device), encoder_hidden_states=context, added_cond_kwargs=added).sample
                target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
                loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if config.train.min_snr_gamma:
                    loss = loss * min_snr_weights(alphas_cumprod, timesteps, config.train.min_snr_gamma,
                                                  prediction).to(loss.device)
                loss = loss.mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, config.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                if ema is not None:
                    ema.step(step)
                lr = scheduler.get_last_lr()[0]
                value = loss.detach().item()
                losses.append([config.train.output_name, step, epoch, value, lr])
                yield TrainEvent("step", epoch, step, value, lr)
        saved = dict(config=config, network=network, arch=arch, session=session, epoch=epoch, step=step,
                     dataset=dataset, started=started)
        paths = [_save(pipe, ema=False, **saved)]
        if ema is not None:
            with ema.swapped_in():
                paths.append(_save(pipe, ema=True, **saved))
        if sink is not None:
            sink.epoch_saved(paths, losses)
            losses = []
        yield TrainEvent("epoch", epoch, step, paths=paths)
    yield TrainEvent("done", config.train.epochs, step)


def _save(pipe, *, config, network, arch, session, epoch, step, ema, dataset, started) -> Path:
    meta = _metadata(config, network, arch, session, epoch, step, ema, dataset, started)
    return write_atomically(network.state_dict(pipe), meta, checkpoint_path(config, epoch, ema))


class _LatentEncoder:
    """VAE latents of a batch; with `cache`, each image is encoded once and a latent drawn from its cached
    distribution (mean, std) at every step, which costs the same random draw as encoding afresh."""

    def __init__(self, vae, dataset: ImageDataset, device, cache: bool):
        self.vae, self.dataset, self.device = vae, dataset, device
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    @torch.no_grad()
    def _encode(self, items: list[dict]):
        pixels = torch.stack([item["pixels"] for item in items]).to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist

    def latents(self, batch: list[int], items: list[dict], generator: torch.Generator) -> torch.Tensor:
        if self.cache is None:
            return self._encode(items).sample(generator=generator)
        images = [self.dataset.image_index(k) for k in batch]
        missing = [(i, item) for i, item in zip(images, items) if i not in self.cache]
        if missing:
            dist = self._encode([item for _, item in missing])
            for j, (i, _) in enumerate(missing):
                self.cache[i] = (dist.mean[j], dist.std[j])
        mean = torch.stack([self.cache[i][0] for i in images])
        std = torch.stack([self.cache[i][1] for i in images])
        noise = torch.randn(mean.shape, generator=generator).to(mean)
        return mean + std * noise


