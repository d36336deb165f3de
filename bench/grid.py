"""Grid-sampling benchmark: our engine against the naive per-image way and against the compute floor.

    . .venv/bin/activate
    HF_HUB_OFFLINE=1 python bench/grid.py                      # tiny + medium on CPU (~6 min on 2 cores)
    HF_HUB_OFFLINE=1 python bench/grid.py --model all          # + SD1.5 shapes at 512x512, bf16 (GPU only)
    HF_HUB_OFFLINE=1 python bench/grid.py --model tiny --naive-sample 0   # time the naive path on every image

Per model (random weights, built from configs, saved as a diffusers folder in a temp dir) it writes
`--epochs` kohya LoRA epochs and samples the grid epochs x prompts x seeds x CFG values, plus the base
row as the engine always does, with the Euler sampler, in one process:

  engine  `sample_run` on a fresh store: planning, base load, LoRA switches, prompt encoding,
          batched denoising, VAE decode, PNG + infotext, content-addressed files, DuckDB rows.
  naive   what trainers' samplers and A1111's X/Y/Z script do: per checkpoint
          `StableDiffusionPipeline.from_pretrained(base)` + `load_lora_weights(file)`, then one
          `pipe(prompt, guidance_scale=cfg, generator=seed)` call and one PNG save per image. With
          `--naive-sample K` only the first K images of each checkpoint are timed and the rest are
          extrapolated at that checkpoint's mean image time; every reload is timed, never estimated.
  floor   only the forward passes the engine needs, on the engine's batches: per batch of b cells,
          `steps` UNet calls on 2b latents (CFG) and one VAE decode of b latents. No scheduler, no
          text encoder, no PNG, no store. Half the batches are timed just before the engine run and
          half just after it, so a drift in the machine's load affects both alike.
  switch  `CheckpointSwitcher.activate` of a LoRA epoch (read file, check, restore the base, patch),
          against reload = `from_pretrained(base)` + `load_lora_weights(file)` (+ `.to(device)`);
          medians over `--switch-reps` rounds.

Table rows (one column per model):

  engine / naive / floor img/s   images per second over the whole grid (naive: estimated, see above)
  ... s/img                      the same as seconds per image
  naive image-only s/img         the naive pipeline call + PNG save alone, reloads excluded
  speed-up vs naive              naive seconds / engine seconds                       target >= 4x
  overhead vs floor              engine seconds / floor seconds                       target <= 1.15x
  CPU-s speed-up / overhead     both ratios from process CPU time (CPU runs only): waiting for a
                                 core that another process holds does not count
  ceiling: naive / floor         the speed-up an engine with no overhead would reach at this batch size
  switch ms, reload ms           median LoRA switch, median reload + LoRA load
  switch speed-up                reload / switch                                      target >= 20x
  GFLOP/img, % of FLOP bound     FLOPs of the floor's forward passes per image (counted with
                                 torch's FlopCounterMode) and, on a GPU, bound time / measured
                                 time at `--peak-tflops` (the issue quotes ~42.7 TFLOP per SD1.5
                                 image at 512x512, 25 steps: ~53 ms at 800 TFLOP/s)

Everything, with the configuration, versions, device, CPU count and load average, goes to `--out`
as JSON. Timings use time.perf_counter after one untimed warm-up per path, with
torch.cuda.synchronize on a GPU. On a shared machine, read ratios with the load average beside them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from evalsvc.sampling.runner import batch_lengths, default_batch_size  # noqa: E402

TARGETS = {"speedup_vs_naive": 4.0, "overhead_vs_floor": 1.15, "switch_speedup": 20.0}
ISSUE_SD15_TFLOP_PER_IMAGE = 42.7
PROMPTS = ("a red circle on a blue background", "a green square on the left", "a yellow triangle at the top",
           "a blue circle on the right", "a purple star in the middle", "an orange square at the bottom")
RUN = "bench"


# --- models -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A random-init SD1.5-architecture pipeline the benchmark samples."""

    name: str
    about: str
    side: int  # image side in pixels
    steps_cpu: int
    steps_gpu: int
    tiny_size: dict | None = None  # TinySize fields; None: SD1.5's real shapes
    gpu_only: bool = False

    def build(self, device: str):
        if self.tiny_size is None:
            return build_sd15_shaped(device)
        from evalsvc.toy.tiny import TinySize, build_sd15_pipeline

        return build_sd15_pipeline(0, TinySize(**self.tiny_size))


MODELS = {
    "tiny": ModelSpec("tiny", "the test fixture: evalsvc.toy.tiny's default TinySize, 64x64", 64, 10, 25, {}),
    # SD1.5's four UNet levels (three with cross-attention) at 1/5 of its widths.
    # 35M-parameter UNet; 64x64 images keep its full grid near two minutes on one CPU core.
    "medium": ModelSpec("medium", "UNet (64,128,256,256) x2 layers, text 256x6, VAE (32,64,128,128), 64x64",
                        64, 10, 25, dict(unet_channels=(64, 128, 256, 256), layers_per_block=2, text_hidden=256,
                                         text_layers=6, vae_channels=(32, 64, 128, 128), sample_size=8)),
    "sd15": ModelSpec("sd15", "SD1.5 shapes: UNet (320,640,1280,1280), text 768x12, VAE (128,256,512,512), "
                              "512x512", 512, 25, 25, None, gpu_only=True),
}


def build_sd15_shaped(device: str):
    """A StableDiffusionPipeline with SD1.5's exact component shapes and random weights."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from evalsvc.toy.tiny import _scheduler  # the SD1.5 scheduler config the tiny fixtures use
    from evalsvc.toy.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):  # random init of 1B parameters is minutes on a CPU, seconds on a GPU
        # UNet2DConditionModel's defaults are SD1.5's UNet except the text width.
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            latent_channels=4, norm_num_groups=32, sample_size=512,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        ))
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


# --- configuration ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run's settings, after defaults are resolved; refuses nonsense."""

    models: tuple[str, ...]
    epochs: int
    prompts: int
    seeds: int
    cfgs: int
    steps: int | None  # None: the model's default for the device
    batch_size: int
    device: str
    precision: str
    naive_sample: int  # images timed per checkpoint on the naive path; 0 = all
    switch_reps: int
    rank: int
    threads: int  # torch CPU threads; 0 = torch's default
    peak_tflops: float
    out: Path

    def __post_init__(self):
        for name in ("epochs", "prompts", "seeds", "cfgs", "batch_size", "switch_reps", "rank"):
            if getattr(self, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.prompts > len(PROMPTS):
            raise SystemExit(f"--prompts must be at most {len(PROMPTS)}, got {self.prompts}")
        if self.threads < 0:
            raise SystemExit(f"--threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.naive_sample < 0:
            raise SystemExit(f"--naive-sample must be >= 0 (0 = every image), got {self.naive_sample}")
        if self.steps is not None and self.steps < 1:
            raise SystemExit(f"--steps must be at least 1, got {self.steps}")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.precision)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def steps_for(self, spec: ModelSpec) -> int:
        return self.steps or (spec.steps_gpu if self.on_gpu else spec.steps_cpu)

    @property
    def cfg_values(self) -> tuple[float, ...]:
        if self.cfgs == 1:
            return (7.0,)
        return tuple(round(4.0 + i * 6.0 / (self.cfgs - 1), 2) for i in range(self.cfgs))

    @property
    def seed_values(self) -> tuple[int, ...]:
        return tuple(range(1, self.seeds + 1))

    @property
    def below_issue_grid(self) -> bool:
        return self.epochs < 4 or self.prompts < 4 or self.seeds < 4 or self.cfgs < 3


def parse_args(argv: list[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="tiny, medium, sd15 or all; repeat or comma-separate "
                                                         "(default: tiny,medium; sd15 needs a GPU)")
    parser.add_argument("--epochs", type=int, default=4, help="LoRA epochs (the base row comes on top)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cfgs", type=int, default=3, help="number of CFG values, spread over 4..10")
    parser.add_argument("--steps", type=int, default=None, help="default: 10 on CPU, 25 on GPU (sd15: 25)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the engine's (24 CPU, 32 GPU)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default=None,
                        help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--naive-sample", type=int, default=None,
                        help="naive images timed per checkpoint, the rest extrapolated; 0 = all "
                             "(default: 3 on CPU, 12 on GPU)")
    parser.add_argument("--switch-reps", type=int, default=3, help="rounds of switch and reload timings")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads; 0 = torch's default (default: 1 on CPU, where OpenMP threads that "
                             "spin against other processes on a shared machine swing timings 10-100x; 0 on GPU)"),
    parser.add_argument("--peak-tflops", type=float, default=800.0,
                        help="dense bf16 peak for the FLOP-bound fraction on GPU (default 800, as the issue)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/grid.json"))
    args = parser.parse_args(argv)

    names = []
    for item in args.model or ["tiny,medium"]:
        for name in item.split(","):
            name = name.strip()
            names.extend(MODELS if name == "all" else [name])
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown --model {unknown[0]!r}; choose from {', '.join(MODELS)} or all")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    precision = args.precision or ("bfloat16" if on_gpu else "float32")
    models = tuple(dict.fromkeys(names))
    named = {n.strip() for item in args.model or [] for n in item.split(",")}
    skipped = [m for m in models if MODELS[m].gpu_only and not on_gpu and m not in named]
    if skipped:
        print(f"skipping {', '.join(skipped)}: GPU only (name it to run it on the CPU anyway)")
        models = tuple(m for m in models if m not in skipped)
    return BenchConfig(
        models=models, epochs=args.epochs, prompts=args.prompts, seeds=args.seeds, cfgs=args.cfgs,
        steps=args.steps, batch_size=args.batch_size or default_batch_size(device), device=device, precision=precision,
        naive_sample=args.naive_sample if args.naive_sample is not None else (12 if on_gpu else 3),
        switch_reps=args.switch_reps, rank=args.rank,
        threads=args.threads if args.threads is not None else (0 if on_gpu else 1),
        peak_tflops=args.peak_tflops, out=args.out,
    )


# --- helpers ------------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Clock:
    """Wall seconds (perf_counter, including the device's queued work) and this process's CPU seconds.

    On a CPU shared with other processes, CPU seconds leave out the time spent waiting for a core.
    """

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")  # torch_dtype -> dtype
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load_naive(base_dir: Path, lora: Path | None, config: BenchConfig):
    """The naive tool's model load: the whole pipeline from disk, then the LoRA through diffusers/PEFT."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base_dir, torch_dtype=config.dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(config.device)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass(frozen=True)
class Fixture:
    """A saved base, its LoRA epochs and the grid every path samples."""

    spec: ModelSpec
    base_dir: Path
    loras: tuple[Path, ...]
    side: int
    steps: int
    cells: tuple[tuple[str, int, float], ...]  # (prompt, seed, cfg) of one checkpoint row, in engine order
    flops_per_image: float
    unet_params: int

    @property
    def rows(self) -> int:
        return len(self.loras) + 1  # the base row, then every epoch

    @property
    def images(self) -> int:
        return self.rows * len(self.cells)

    def batch_sizes(self, batch_size: int) -> list[int]:
        """The engine's batches: per checkpoint row, its cells in slices of `batch_size`."""
        return batch_lengths(len(self.cells), batch_size) * self.rows


def count_flops_per_image(pipe, side: int, steps: int) -> float:
    """FLOPs of `steps` CFG UNet calls (batch 2) and one VAE decode, counted on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    h = side // pipe.vae_scale_factor
    with torch.device("meta"):
        unet = type(pipe.unet).from_config(pipe.unet.config)
        vae = type(pipe.vae).from_config(pipe.vae.config)
        x = torch.empty(2, unet.config.in_channels, h, h)
        context = torch.empty(2, 77, unet.config.cross_attention_dim)
        z = torch.empty(1, vae.config.latent_channels, h, h)
        with torch.no_grad():
            with FlopCounterMode(display=False) as unet_count:
                unet(x, torch.tensor(500), encoder_hidden_states=context)
            with FlopCounterMode(display=False) as vae_count:
                vae.decode(z)
    return float(steps * unet_count.get_total_flops() + vae_count.get_total_flops())


def make_fixture(spec: ModelSpec, config: BenchConfig, workdir: Path) -> Fixture:
    from evalsvc.toy.lora_files import write_kohya_epochs

    build_device = config.device if spec.tiny_size is None else "cpu"
    t0 = time.perf_counter()
    pipe = spec.build(build_device)
    pipe.to("cpu", config.dtype if spec.tiny_size is None else torch.float32)
    base_dir = workdir / f"base-{spec.name}"
    pipe.save_pretrained(base_dir, safe_serialization=True)
    loras = write_kohya_epochs(pipe, workdir / f"loras-{spec.name}", name=f"bench{spec.name}",
                               epochs=config.epochs, rank=config.rank, seed=0)
    steps = config.steps_for(spec)
    flops = count_flops_per_image(pipe, spec.side, steps)
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    del pipe
    _free(config.device)
    # The engine sorts one checkpoint's cells by prompt text, seed, CFG; the naive loop follows that order.
    cells = tuple((p, s, c) for p in sorted(PROMPTS[: config.prompts]) for s in config.seed_values
                  for c in config.cfg_values)
    print(f"  built and saved in {time.perf_counter() - t0:.1f}s: UNet {unet_params / 1e6:.1f}M params, "
          f"{len(loras)} LoRA epochs, {len(cells)} cells per checkpoint, {steps} steps")
    return Fixture(spec, base_dir, tuple(loras), spec.side, steps, cells, flops, unet_params)


# --- (a) the engine -----------------------------------------------------------------------------------

def _suite(texts):
    from evalsvc.suites import PromptSpec, Suite

    return Suite("bench-grid", tuple(PromptSpec(f"p{i + 1}", text) for i, text in enumerate(texts)))


def _engine_run(fx: Fixture, config: BenchConfig, store_dir: Path, loras, texts, seeds, cfgs, steps):
    from evalsvc.catalog import add_checkpoints
    from evalsvc.sampling.grid import GridOptions
    from evalsvc.sampling.runner import RunnerConfig, sample_run
    from evalsvc.store import open_store

    options = GridOptions(seeds=tuple(seeds), cfgs=tuple(cfgs), steps=(steps,), samplers=("euler",),
                          sizes=((fx.side, fx.side),), precision=config.precision, max_cells=10**9)
    runner = RunnerConfig(device=config.device, batch_size=config.batch_size, progress=False)
    with open_store(store_dir) as store:
        added = add_checkpoints(store, list(loras), RUN, base=fx.base_dir)
        if added.refused:
            raise SystemExit(f"the catalog refused bench files: {added.refused}")
        with Clock(config.device) as clock:
            report = sample_run(store, RUN, _suite(texts), options, runner)
    return report, clock


def bench_engine(fx: Fixture, config: BenchConfig, workdir: Path) -> dict:
    # Warm-up: one batch of base-row cells, 2 steps, in a store of its own.
    _engine_run(fx, config, workdir / f"warm-store-{fx.spec.name}", [], [PROMPTS[0]],
                range(1, min(config.batch_size, len(fx.cells)) + 1), [7.0], 2)
    _free(config.device)
    texts = sorted({p for p, _, _ in fx.cells})
    report, clock = _engine_run(fx, config, workdir / f"store-{fx.spec.name}", fx.loras, texts,
                                config.seed_values, config.cfg_values, fx.steps)
    seconds = clock.seconds
    if report.sampled != fx.images or report.failed:
        raise SystemExit(f"engine sampled {report.sampled} of {fx.images} images, {report.failed} failed: "
                         f"{report.failures}")
    _free(config.device)
    return {"images": report.sampled, "seconds": seconds, "cpu_seconds": clock.cpu_seconds,
            "execute_seconds": report.seconds,
            "img_per_s": report.sampled / seconds, "s_per_img": seconds / report.sampled}


# --- (b) the naive way --------------------------------------------------------------------------------

def bench_naive(fx: Fixture, config: BenchConfig, workdir: Path) -> dict:
    out_dir = workdir / f"naive-{fx.spec.name}"
    out_dir.mkdir()
    # Warm-up: one load and one short call.
    pipe = _load_naive(fx.base_dir, fx.loras[0], config)
    pipe(PROMPTS[0], num_inference_steps=2, height=fx.side, width=fx.side)
    del pipe
    _free(config.device)

    per_row = len(fx.cells)
    timed = per_row if config.naive_sample == 0 else min(config.naive_sample, per_row)
    checkpoints = []
    for index, lora in enumerate((None, *fx.loras)):
        with Clock(config.device) as load:
            pipe = _load_naive(fx.base_dir, lora, config)
        image_seconds, image_cpu = [], []
        for n, (prompt, seed, cfg) in enumerate(fx.cells[:timed]):
            with Clock(config.device) as call:
                image = pipe(prompt, guidance_scale=cfg, generator=torch.Generator().manual_seed(seed),
                             num_inference_steps=fx.steps, height=fx.side, width=fx.side).images[0]
                image.save(out_dir / f"{index}-{n}.png")
            image_seconds.append(call.seconds)
            image_cpu.append(call.cpu_seconds)
        del pipe
        _free(config.device)
        mean_image = statistics.fmean(image_seconds)
        checkpoints.append({"checkpoint": lora.name if lora else "base", "load_seconds": load.seconds,
                            "images_timed": timed, "image_seconds_mean": mean_image,
                            "estimated_seconds": load.seconds + mean_image * per_row,
                            "estimated_cpu_seconds": load.cpu_seconds + statistics.fmean(image_cpu) * per_row})
    seconds = sum(c["estimated_seconds"] for c in checkpoints)
    image_only = statistics.fmean(c["image_seconds_mean"] for c in checkpoints)
    return {"images": fx.images, "images_timed": timed * fx.rows, "extrapolated": timed < per_row,
            "seconds": seconds, "cpu_seconds": sum(c["estimated_cpu_seconds"] for c in checkpoints),
            "img_per_s": fx.images / seconds, "s_per_img": seconds / fx.images,
            "image_only_s_per_img": image_only, "checkpoints": checkpoints}


# --- (c) the floor ------------------------------------------------------------------------------------

class Floor:
    """UNet and VAE forward passes alone on the engine's batches, with the engine's model loader.

    `run` times a share of the batches; the benchmark runs half before the engine and half after it,
    so a change in the machine's load during the engine run hits both sides alike.
    """

    def __init__(self, fx: Fixture, config: BenchConfig):
        from evalsvc.catalog import CheckpointRow
        from evalsvc.sampling.models import load_pipeline

        row = CheckpointRow(sha256="0" * 64, path=str(fx.base_dir), file_name=fx.base_dir.name, kind="diffusers",
                            arch="sd15", lora_format=None, epoch=None, step=None, ema=False, addnet_hash=None,
                            config_path=None, metadata={}, status="ok", error=None)
        self.config = config
        self.pipe = load_pipeline(row, config.device, config.dtype)
        unet, vae = self.pipe.unet, self.pipe.vae
        h = fx.side // self.pipe.vae_scale_factor
        gen = torch.Generator().manual_seed(0)
        self.timesteps = [torch.tensor(float(t), device=config.device)
                          for t in torch.linspace(999, 1, fx.steps).round().tolist()]
        self.batches = fx.batch_sizes(config.batch_size)
        self.inputs = {}
        for b in set(self.batches):
            self.inputs[b] = (
                torch.randn(2 * b, unet.config.in_channels, h, h, generator=gen).to(config.device, config.dtype),
                torch.randn(2 * b, 77, unet.config.cross_attention_dim, generator=gen).to(config.device, config.dtype),
                torch.randn(b, vae.config.latent_channels, h, h, generator=gen).to(config.device, config.dtype),
            )
        self._forward([self.batches[0]], self.timesteps[:2])  # warm-up
        self.seconds = self.cpu_seconds = 0.0
        self.images = 0

    def _forward(self, batches: list[int], timesteps) -> None:
        unet, vae = self.pipe.unet, self.pipe.vae
        with torch.no_grad():
            for b in batches:
                x, context, z = self.inputs[b]
                for t in timesteps:
                    unet(x, t, encoder_hidden_states=context, return_dict=False)
                vae.decode(z, return_dict=False)

    def run(self, part: int, parts: int = 2) -> None:
        """Time the `part`-th of `parts` equal shares of the batches (0-based)."""
        n = len(self.batches)
        share = self.batches[part * n // parts:(part + 1) * n // parts]
        with Clock(self.config.device) as clock:
            self._forward(share, self.timesteps)
        self.seconds += clock.seconds
        self.cpu_seconds += clock.cpu_seconds
        self.images += sum(share)

    def close(self) -> dict:
        del self.pipe, self.inputs
        _free(self.config.device)
        return {"images": self.images, "batches": len(self.batches), "seconds": self.seconds,
                "cpu_seconds": self.cpu_seconds, "img_per_s": self.images / self.seconds,
                "s_per_img": self.seconds / self.images, "timed_as": "half before the engine, half after"}


# --- LoRA switch vs full reload -----------------------------------------------------------------------

def bench_switch(fx: Fixture, config: BenchConfig, workdir: Path) -> dict:
    from evalsvc.catalog import run_checkpoints
    from evalsvc.sampling.models import CheckpointSwitcher
    from evalsvc.store import open_store

    with open_store(workdir / f"store-{fx.spec.name}") as store:
        rows = run_checkpoints(store.db, RUN)
    base = next(r for r in rows if r.role == "base")
    loras = [r for r in rows if r.kind == "lora"]

    switcher = CheckpointSwitcher(base, config.device, config.dtype)
    switcher.activate(loras[0], 1.0)  # warm-up
    switch = []
    for i in range(config.switch_reps * len(loras)):
        with Clock(config.device) as clock:
            switcher.activate(loras[(i + 1) % len(loras)], 1.0)
        switch.append(clock.seconds)
    switcher.close()
    del switcher
    _free(config.device)

    _load_naive(fx.base_dir, fx.loras[0], config)  # warm-up
    _free(config.device)
    reload = []
    for i in range(config.switch_reps):
        with Clock(config.device) as clock:
            pipe = _load_naive(fx.base_dir, fx.loras[i % len(fx.loras)], config)
        reload.append(clock.seconds)
        del pipe
        _free(config.device)
    return {"switch_ms": 1000 * statistics.median(switch), "reload_ms": 1000 * statistics.median(reload),
            "switch_samples_ms": [1000 * s for s in switch], "reload_samples_ms": [1000 * s for s in reload]}


# --- report -------------------------------------------------------------------------------------------

def bench_model(spec: ModelSpec, config: BenchConfig, workdir: Path) -> dict:
    print(f"\n== {spec.name}: {spec.about}")
    load_before = _loadavg()
    fx = make_fixture(spec, config, workdir)
    result = {"model": spec.name, "about": spec.about, "side": fx.side, "steps": fx.steps,
              "unet_params": fx.unet_params, "rows": fx.rows, "cells_per_row": len(fx.cells), "images": fx.images,
              "flops_per_image": fx.flops_per_image}
    floor = None

    def floor_first_half():
        nonlocal floor
        floor = Floor(fx, config)
        floor.run(0)

    def floor_second_half():
        floor.run(1)
        return floor.close()

    steps = (("floor, first half", floor_first_half), ("engine", lambda: bench_engine(fx, config, workdir)),
             ("floor, second half", floor_second_half), ("naive", lambda: bench_naive(fx, config, workdir)),
             ("switch", lambda: bench_switch(fx, config, workdir)))
    for label, fn in steps:
        t0 = time.perf_counter()
        value = fn()
        if value is not None:
            result[label.split(",")[0]] = value
        print(f"  {label:<18} done in {time.perf_counter() - t0:.1f}s")
    engine, naive, floor, switch = (result[k] for k in ("engine", "naive", "floor", "switch"))
    result["ratios"] = {
        "speedup_vs_naive": naive["seconds"] / engine["seconds"],
        "overhead_vs_floor": engine["seconds"] / floor["seconds"],
        "switch_speedup": switch["reload_ms"] / switch["switch_ms"],
        # The speed-up a zero-overhead engine would reach at this batch size: naive / floor.
        "speedup_ceiling": naive["seconds"] / floor["seconds"],
        # The same from process CPU seconds: less sensitive to other processes on a shared CPU.
        "speedup_vs_naive_cpu_time": naive["cpu_seconds"] / engine["cpu_seconds"],
        "overhead_vs_floor_cpu_time": engine["cpu_seconds"] / floor["cpu_seconds"],
    }
    result["targets_met"] = {
        "speedup_vs_naive": result["ratios"]["speedup_vs_naive"] >= TARGETS["speedup_vs_naive"],
        "overhead_vs_floor": result["ratios"]["overhead_vs_floor"] <= TARGETS["overhead_vs_floor"],
        "switch_speedup": result["ratios"]["switch_speedup"] >= TARGETS["switch_speedup"],
    }
    peak = config.peak_tflops * 1e12
    result["flop_bound"] = {
        "peak_tflops": config.peak_tflops,
        "bound_s_per_img": fx.flops_per_image / peak,
        "engine_fraction": fx.flops_per_image / peak / engine["s_per_img"],
        "floor_fraction": fx.flops_per_image / peak / floor["s_per_img"],
        "engine_tflops": fx.flops_per_image / engine["s_per_img"] / 1e12,
        "floor_tflops": fx.flops_per_image / floor["s_per_img"] / 1e12,
        "meaningful": config.on_gpu,
    }
    result["loadavg_before"], result["loadavg_after"] = load_before, _loadavg()
    return result


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def render_table(results: list[dict], config: BenchConfig) -> str:
    names = [r["model"] for r in results]
    width = 16
    lines = [f"{'':<28}" + "".join(f"{n:>{width}}" for n in names) + f"{'target':>{width}}"]

    def row(label, cells, target=""):
        lines.append(f"{label:<28}" + "".join(f"{c:>{width}}" for c in cells) + f"{target:>{width}}")

    row("images (rows x cells)", [f"{r['images']} ({r['rows']}x{r['cells_per_row']})" for r in results])
    row("steps, side", [f"{r['steps']}, {r['side']}px" for r in results])
    row("engine img/s", [f"{r['engine']['img_per_s']:.3f}" for r in results])
    row("naive img/s" + (" (est.)" if any(r["naive"]["extrapolated"] for r in results) else ""),
        [f"{r['naive']['img_per_s']:.3f}" for r in results])
    row("floor img/s", [f"{r['floor']['img_per_s']:.3f}" for r in results])
    row("engine s/img", [f"{r['engine']['s_per_img']:.4f}" for r in results])
    row("naive s/img", [f"{r['naive']['s_per_img']:.4f}" for r in results])
    row("naive image-only s/img", [f"{r['naive']['image_only_s_per_img']:.4f}" for r in results])
    row("floor s/img", [f"{r['floor']['s_per_img']:.4f}" for r in results])
    row("speed-up vs naive", [f"{r['ratios']['speedup_vs_naive']:.2f}x "
                              f"{_mark(r['targets_met']['speedup_vs_naive'])}" for r in results],
        f">= {TARGETS['speedup_vs_naive']:g}x")
    row("overhead vs floor", [f"{r['ratios']['overhead_vs_floor']:.2f}x "
                              f"{_mark(r['targets_met']['overhead_vs_floor'])}" for r in results],
        f"<= {TARGETS['overhead_vs_floor']:g}x")
    if not config.on_gpu:
        row("CPU-s speed-up / overhead", [f"{r['ratios']['speedup_vs_naive_cpu_time']:.2f}x / "
                                    f"{r['ratios']['overhead_vs_floor_cpu_time']:.2f}x" for r in results])
    row("ceiling: naive / floor", [f"{r['ratios']['speedup_ceiling']:.2f}x" for r in results])
    row("LoRA switch ms", [f"{r['switch']['switch_ms']:.1f}" for r in results])
    row("reload + LoRA ms", [f"{r['switch']['reload_ms']:.1f}" for r in results])
    row("switch speed-up", [f"{r['ratios']['switch_speedup']:.1f}x "
                            f"{_mark(r['targets_met']['switch_speedup'])}" for r in results],
        f">= {TARGETS['switch_speedup']:g}x")
    row("GFLOP/img (counted)", [f"{r['flops_per_image'] / 1e9:.1f}" for r in results])
    if config.on_gpu:
        row("engine % of FLOP bound", [f"{100 * r['flop_bound']['engine_fraction']:.1f}%" for r in results])
        row("floor % of FLOP bound", [f"{100 * r['flop_bound']['floor_fraction']:.1f}%" for r in results])
    else:
        row("engine GFLOP/s", [f"{r['flop_bound']['engine_tflops'] * 1e3:.1f}" for r in results])
    row("load avg before/after", [f"{r['loadavg_before'][0]:.1f}/{r['loadavg_after'][0]:.1f}"
                                  if r["loadavg_before"] else "n/a" for r in results])
    notes = []
    for r in results:
        n = r["naive"]
        if n["extrapolated"]:
            notes.append(f"{r['model']}: naive timed {n['images_timed']} of {n['images']} images (first "
                         f"{n['images_timed'] // r['rows']} per checkpoint), the rest extrapolated per image; "
                         f"all {r['rows']} reloads timed")
    if config.below_issue_grid:
        notes.append("grid is smaller than the issue's minimum (4 epochs x 4 prompts x 4 seeds x 3 CFG)")
    return "\n".join(lines + [f"note: {n}" for n in notes])


def environment(config: BenchConfig) -> dict:
    import diffusers
    import transformers

    device_name = torch.cuda.get_device_name() if config.on_gpu else (platform.processor() or platform.machine())
    return {"python": sys.version.split()[0], "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(), "device": config.device,
            "device_name": device_name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if config.threads:
        torch.set_num_threads(config.threads)
    _quiet_libraries()
    env = environment(config)
    print(f"grid: {config.epochs} epochs (+ base row) x {config.prompts} prompts x {config.seeds} seeds x "
          f"{config.cfgs} CFG {config.cfg_values}; batch {config.batch_size}; {config.device} ({env['device_name']}), "
          f"{config.precision}, {env['cpu_count']} CPUs ({env['torch_threads']} torch threads), "
          f"torch {env['torch']}, diffusers {env['diffusers']}")
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evalsvc-bench-") as tmp:
        for name in config.models:
            results.append(bench_model(MODELS[name], config, Path(tmp)))
    table = render_table(results, config)
    print("\n" + table)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": {**asdict(config), "out": str(config.out), "cfg_values": config.cfg_values,
                          "seed_values": config.seed_values, "sampler": "euler"},
               "targets": TARGETS, "environment": env, "total_seconds": time.perf_counter() - t0,
               "issue_sd15_tflop_per_image": ISSUE_SD15_TFLOP_PER_IMAGE, "models": results, "table": table}
    config.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {config.out} (total {payload['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
