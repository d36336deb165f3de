"""The trainer's TOML config as frozen, validated sections; nonsense is refused before training starts.

Every error names the key and the value, e.g. "train.learning_rate must be > 0, got -1".
Relative paths are kept as written (relative to the working directory, as kohya's are).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from evalsvc.errors import InputError
from evalsvc.textfiles import read_toml

ARCHS = ("sd15", "sdxl")
NETWORK_KINDS = ("lora", "full")
OPTIMIZERS = ("adamw", "lion", "prodigy")
SCHEDULERS = ("constant", "cosine", "cosine_with_restarts", "linear")
MIXED_PRECISION = ("no", "fp16", "bf16")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_RESOLUTION = 4096


# --- value checks: each returns the problem ("must be ...") or None --------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _int(value, low=None, high=None):
    if not _is_int(value):
        return "must be an integer"
    if low is not None and value < low:
        return f"must be >= {low}"
    if high is not None and value > high:
        return f"must be <= {high}"
    return None


def _positive(value, optional=False):
    if value is None and optional:
        return None
    if not _is_number(value):
        return "must be a number" + (" or absent" if optional else "")
    return None if value > 0 else "must be > 0"


def _fraction(value, *, closed_top=True):
    """A probability: [0, 1], or [0, 1) when `closed_top` is false."""
    if not _is_number(value):
        return "must be a number"
    ok = 0 <= value <= 1 if closed_top else 0 <= value < 1
    return None if ok else ("must be in [0, 1]" if closed_top else "must be in [0, 1)")


def _choice(value, choices, optional=False):
    if value is None and optional:
        return None
    return None if value in choices else "must be one of " + ", ".join(repr(c) for c in choices)


def _bool(value):
    return None if isinstance(value, bool) else "must be true or false"


def _text(value, optional=False):
    if value is None and optional:
        return None
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


class _Section:
    """Shared validation: subclasses yield (key, problem) pairs; the first is raised."""

    SECTION = ""

    def _problems(self):  # pragma: no cover - every section overrides it
        return iter(())

    def _check(self):
        for key, problem in self._problems():
            if problem:
                value = getattr(self, key)
                raise InputError(f"{self.SECTION}.{key} {problem}, got {value!r}")

    def _set(self, key, value):
        object.__setattr__(self, key, value)

    def _floats(self, *keys):
        """Store numbers given as TOML integers as floats, so equal configs compare and serialise equal."""
        for key in keys:
            value = getattr(self, key)
            if _is_int(value):
                self._set(key, float(value))


@dataclass(frozen=True)
class ModelConfig(_Section):
    """`[model]`: the base checkpoint; `arch` None means detect it from the checkpoint later."""

    SECTION = "model"
    base: str
    arch: str | None = None

    def __post_init__(self):
        if isinstance(self.base, Path):
            self._set("base", str(self.base))
        self._check()

    def _problems(self):
        yield "base", _text(self.base)
        yield "arch", _choice(self.arch, ARCHS, optional=True)


@dataclass(frozen=True)
class NetworkConfig(_Section):
    """`[network]`: what is trained; `alpha` defaults to `rank`, learning rates to `train.learning_rate`."""

    SECTION = "network"
    kind: str = "lora"
    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    train_text_encoder: bool = False
    unet_lr: float | None = None
    text_encoder_lr: float | None = None

    def __post_init__(self):
        self._check()
        if self.alpha is None:
            self._set("alpha", float(self.rank))
        self._floats("alpha", "dropout", "unet_lr", "text_encoder_lr")

    def _problems(self):
        yield "kind", _choice(self.kind, NETWORK_KINDS)
        yield "rank", _int(self.rank, low=1)
        yield "alpha", _positive(self.alpha, optional=True)
        yield "dropout", _fraction(self.dropout, closed_top=False)
        yield "train_text_encoder", _bool(self.train_text_encoder)
        yield "unet_lr", _positive(self.unet_lr, optional=True)
        yield "text_encoder_lr", _positive(self.text_encoder_lr, optional=True)


@dataclass(frozen=True)
class TrainSection(_Section):
    """`[train]`: the optimisation loop and where its checkpoints go."""

    SECTION = "train"
    output_dir: str
    output_name: str = "lora"
    seed: int = 42
    epochs: int = 10
    batch_size: int = 1
    gradient_accumulation: int = 1
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "constant"
    warmup_steps: int = 0
    restarts: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    max_grad_norm: float = 1.0

    def __post_init__(self):
        if isinstance(self.output_dir, Path):
            self._set("output_dir", str(self.output_dir))
        self._check()
        self._floats("learning_rate", "noise_offset", "min_snr_gamma", "max_grad_norm")

    def _problems(self):
        yield "output_dir", _text(self.output_dir)
        name_ok = _text(self.output_name) is None and not any(c in self.output_name for c in "/\\")
        yield "output_name", None if name_ok else "must be a non-empty file name without '/' or '\\'"
        yield "seed", _int(self.seed, low=0, high=2**32 - 1)
        yield "epochs", _int(self.epochs, low=1)
        yield "batch_size", _int(self.batch_size, low=1)
        yield "gradient_accumulation", _int(self.gradient_accumulation, low=1)
        yield "learning_rate", _positive(self.learning_rate)
        yield "optimizer", _choice(self.optimizer, OPTIMIZERS)
        yield "scheduler", _choice(self.scheduler, SCHEDULERS)
        yield "warmup_steps", _int(self.warmup_steps, low=0)
        yield "restarts", _int(self.restarts, low=1)
        yield "mixed_precision", _choice(self.mixed_precision, MIXED_PRECISION)
        yield "gradient_checkpointing", _bool(self.gradient_checkpointing)
        offset_ok = _is_number(self.noise_offset) and self.noise_offset >= 0
        yield "noise_offset", None if offset_ok else "must be a number >= 0"
        yield "min_snr_gamma", _positive(self.min_snr_gamma, optional=True)
        yield "max_grad_norm", _positive(self.max_grad_norm)


@dataclass(frozen=True)
class EmaConfig(_Section):
    """`[ema]`: an exponential moving average of the trained weights."""

    SECTION = "ema"
    enabled: bool = False
    decay: float = 0.999
    update_every: int = 1

    def __post_init__(self):
        self._check()
        self._floats("decay")

    def _problems(self):
        yield "enabled", _bool(self.enabled)
        decay_ok = _is_number(self.decay) and 0 < self.decay < 1
        yield "decay", None if decay_ok else "must be a number with 0 < decay < 1"
        yield "update_every", _int(self.update_every, low=1)


@dataclass(frozen=True)
class DatasetConfig(_Section):
    """`[dataset]`: a kohya-style image folder, bucketing bounds and caption augmentation.

    `cache_latents` encodes each image with the VAE once (its mean and spread; a fresh latent is
    still drawn every step), as kohya's option of that name.

    `min_resolution` defaults to resolution/2 and `max_resolution` to resolution*2 (capped at 4096),
    both rounded down to a multiple of `bucket_step`.
    """

    SECTION = "dataset"
    folder: str
    resolution: int = 512
    min_resolution: int | None = None
    max_resolution: int | None = None
    bucket_step: int = 64
    repeats: int = 1
    flip: bool = False
    cache_latents: bool = False
    caption_extension: str = ".txt"
    shuffle_tags: bool = False
    keep_tokens: int = 0
    caption_dropout: float = 0.0
    trigger_word: str | None = None

    def __post_init__(self):
        if isinstance(self.folder, Path):
            self._set("folder", str(self.folder))
        self._check()
        step = self.bucket_step
        if self.min_resolution is None:
            self._set("min_resolution", max(step, self.resolution // 2 // step * step))
        if self.max_resolution is None:
            self._set("max_resolution", max(step, min(self.resolution * 2, MAX_RESOLUTION) // step * step))
        self._check_bounds()
        self._floats("caption_dropout")

    def _problems(self):
        yield "folder", _text(self.folder)
        resolution_ok = _int(self.resolution, 64, MAX_RESOLUTION) is None and self.resolution % 8 == 0
        yield "resolution", None if resolution_ok else f"must be a multiple of 8 in 64..{MAX_RESOLUTION}"
        step_ok = _int(self.bucket_step, 8, MAX_RESOLUTION) is None and self.bucket_step % 8 == 0
        yield "bucket_step", None if step_ok else f"must be a multiple of 8 in 8..{MAX_RESOLUTION}"
        yield "repeats", _int(self.repeats, low=1)
        yield "flip", _bool(self.flip)
        cache_ok = _bool(self.cache_latents) or (self.flip is True and self.cache_latents is True and
                                                 "cannot be true with dataset.flip: a cached latent is never flipped")
        yield "cache_latents", cache_ok
        ext = self.caption_extension
        ext_ok = isinstance(ext, str) and len(ext) > 1 and ext.startswith(".") and ext.lower() not in IMAGE_EXTENSIONS
        yield "caption_extension", None if ext_ok else "must start with '.' (e.g. '.txt') and not be an image extension"
        yield "shuffle_tags", _bool(self.shuffle_tags)
        yield "keep_tokens", _int(self.keep_tokens, low=0)
        yield "caption_dropout", _fraction(self.caption_dropout)
        trigger_ok = _text(self.trigger_word, optional=True) is None and "," not in (self.trigger_word or "")
        yield "trigger_word", None if trigger_ok else "must be a non-empty string without ',' or absent"

    def _check_bounds(self):
        step = self.bucket_step
        for key in ("min_resolution", "max_resolution"):
            value = getattr(self, key)
            if not (_int(value, step, MAX_RESOLUTION) is None and value % step == 0):
                raise InputError(
                    f"dataset.{key} must be a multiple of dataset.bucket_step ({step}) in {step}..{MAX_RESOLUTION}, "
                    f"got {value!r}"
                )
        if self.min_resolution > self.resolution:
            raise InputError(
                f"dataset.min_resolution must be <= dataset.resolution ({self.resolution}), got {self.min_resolution!r}"
            )
        square = self.resolution // step * step
        if self.max_resolution < square:
            raise InputError(
                f"dataset.max_resolution must be >= {square} (dataset.resolution rounded down to dataset.bucket_step), "
                f"got {self.max_resolution!r}"
            )


@dataclass(frozen=True)
class EvalConfig(_Section):
    """`[eval]`: the evaluation grid queued for every saved checkpoint when the trainer has a store.

    Absent values mean the suite's own per-prompt values, as for `evalsvc sample`. `steps`, `sampler` and
    `lora_scales` take one value or a list (the grid is the product, as on the command line).
    """

    SECTION = "eval"
    suite: str | None = None
    seeds: tuple[int, ...] | None = None
    cfgs: tuple[float, ...] | None = None
    steps: int | tuple[int, ...] | None = None
    sampler: str | tuple[str, ...] | None = None
    lora_scales: tuple[float, ...] | None = None

    def __post_init__(self):
        self._check()
        if self.seeds is not None:
            self._set("seeds", tuple(self.seeds))
        if self.cfgs is not None:
            self._set("cfgs", tuple(float(c) for c in self.cfgs))
        for name in ("steps", "sampler"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if self.lora_scales is not None:
            self._set("lora_scales", tuple(float(v) for v in self.lora_scales))

    def _problems(self):
        yield "suite", _text(self.suite, optional=True)
        seeds_ok = self.seeds is None or (isinstance(self.seeds, (list, tuple)) and len(self.seeds) > 0
                                          and all(_int(s, 0, 2**32 - 1) is None for s in self.seeds))
        yield "seeds", None if seeds_ok else "must be a non-empty list of integers in 0..4294967295"
        cfgs_ok = self.cfgs is None or (isinstance(self.cfgs, (list, tuple)) and len(self.cfgs) > 0
                                        and all(_positive(c) is None for c in self.cfgs))
        yield "cfgs", None if cfgs_ok else "must be a non-empty list of numbers > 0"
        steps = self.steps if isinstance(self.steps, (list, tuple)) else [self.steps]
        yield "steps", None if self.steps is None else (
            "must be a step count or a non-empty list of them" if not steps else
            next((p for p in (_int(v, 1, 1000) for v in steps) if p), None))
        samplers = self.sampler if isinstance(self.sampler, (list, tuple)) else [self.sampler]
        yield "sampler", None if self.sampler is None else (
            "must be a sampler name or a non-empty list of them" if not samplers else
            next((p for p in (_text(v) or _known_sampler(v) for v in samplers) if p), None))
        scales_ok = self.lora_scales is None or (isinstance(self.lora_scales, (list, tuple)) and self.lora_scales
                                                 and all(_is_number(v) for v in self.lora_scales))
        yield "lora_scales", None if scales_ok else "must be a non-empty list of numbers"

    def grid_options(self):
        """These settings as the engine's `GridOptions` (which also checks the sampler name)."""
        from evalsvc.sampling.grid import GridOptions

        return GridOptions(seeds=self.seeds, cfgs=self.cfgs, steps=self.steps, samplers=self.sampler,
                           lora_scales=self.lora_scales or (1.0,))


def _known_sampler(name):
    from evalsvc.sampling.samplers import resolve_sampler

    if name is None:
        return None
    try:
        resolve_sampler(name)
    except InputError:
        return "must be a sampler name known to the engine (A1111, kohya or OneTrainer spelling)"
    return None


SECTIONS = {
    "model": ModelConfig,
    "network": NetworkConfig,
    "train": TrainSection,
    "ema": EmaConfig,
    "dataset": DatasetConfig,
    "eval": EvalConfig,
}
REQUIRED_SECTIONS = ("model", "train", "dataset")


@dataclass(frozen=True)
class TrainConfig:
    """The whole run: one value per TOML section."""

    model: ModelConfig
    network: NetworkConfig
    train: TrainSection
    ema: EmaConfig
    dataset: DatasetConfig
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"[{name}] must be a {kind.__name__}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict, section by section; `from_dict` reads it back to an equal config."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        """Build from parsed TOML (or `to_dict`); unknown sections or keys and missing required keys are refused."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: config must be a table of sections, got {data!r}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise InputError(
                f"{source}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)} (expected {', '.join(SECTIONS)})"
            )
        sections = {}
        for name, kind in SECTIONS.items():
            if name not in data:
                if name in REQUIRED_SECTIONS:
                    raise InputError(f"{source}: missing section [{name}]")
                sections[name] = kind()
                continue
            table = data[name]
            if not isinstance(table, dict):
                raise InputError(f"{source}: [{name}] must be a table, got {table!r}")
            fields = {f.name: f for f in dataclasses.fields(kind)}
            unknown = sorted(set(table) - set(fields))
            if unknown:
                raise InputError(
                    f"{source}: unknown key(s) {', '.join(f'{name}.{u}' for u in unknown)} "
                    f"(expected one of {', '.join(fields)})"
                )
            for key, spec in fields.items():
                required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
                if required and key not in table:
                    raise InputError(f"{source}: {name}.{key} is required")
            try:
                sections[name] = kind(**table)
            except InputError as error:
                raise InputError(f"{source}: {error}") from None
        return cls(**sections)


def load_config(path) -> TrainConfig:
    """Read and validate a trainer TOML file."""
    path = Path(path)
    data, _ = read_toml(path, "trainer config")
    return TrainConfig.from_dict(data, source=str(path))
