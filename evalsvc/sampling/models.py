"""Loading pipelines and switching checkpoints: the base is loaded once per run.

LoRA checkpoints are applied to the base pipeline in place (see `lora.py`); full and UNet-only
checkpoints get a pipeline of their own that shares the base's other parts where it can.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..catalog import CheckpointRow
from ..checkpoints import check_finite, load_tensors
from ..errors import CheckpointError
from ..adapters.read import read_adapter_layers
from .lora import WeightPatcher

PIPELINE_CLASSES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


def _pipeline_class(arch: str):
    import diffusers

    return getattr(diffusers, PIPELINE_CLASSES[arch])


def _check_parameters_finite(path, pipe) -> None:
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for name, param in model.named_parameters():
            bad = (~torch.isfinite(param)).sum().item()
            if bad:
                raise CheckpointError(path, f"tensor '{component}.{name}' has {bad} NaN/Inf values")


def load_pipeline(row: CheckpointRow, device: str, dtype: torch.dtype, config_path: str | None = None):
    """A diffusers pipeline for a full checkpoint or diffusers folder, on `device` in `dtype`.

    A single file needs a diffusers folder of its architecture for the configs (`config_path`,
    else the row's own); without one diffusers fetches the configs from the hub.
    """
    cls = _pipeline_class(row.arch)
    extra = {"safety_checker": None, "requires_safety_checker": False} if row.arch == "sd15" else {}
    try:
        if row.kind == "diffusers":
            pipe = cls.from_pretrained(row.path, dtype=dtype, **extra)
        elif row.kind == "full":
            config_path = row.config_path or config_path
            config = {"config": config_path, "local_files_only": True} if config_path else {}
            pipe = cls.from_single_file(row.path, dtype=dtype, **config, **extra)
        else:
            raise CheckpointError(row.path, f"a {row.kind} checkpoint is not a whole pipeline")
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        hint = ""
        if row.kind == "full" and not config_path:
            hint = ("; a single file needs its architecture's configs: register it with "
                    "`evalsvc add --run RUN --base FILE --config DIFFUSERS_FOLDER`")
        raise CheckpointError(row.path, f"diffusers could not load it: {str(exc).splitlines()[0]}{hint}") from None
    _check_parameters_finite(row.path, pipe)
    pipe.set_progress_bar_config(disable=True)
    return _for_sampling(pipe.to(device))


def _for_sampling(pipe):
    """Convolutions in channels-last layout: about 10% faster UNet batches on CPUs (oneDNN) and GPUs."""
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    return pipe


def _unet_state_dict(row: CheckpointRow, tensors: dict, unet_config) -> dict:
    if any(k.startswith("model.diffusion_model.") for k in tensors):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        return convert_ldm_unet_checkpoint(tensors, unet_config)
    return tensors


class CheckpointSwitcher:
    """Hands out a ready pipeline for each checkpoint of a run, reusing the loaded base."""

    def __init__(self, base: CheckpointRow, device: str, dtype: torch.dtype):
        self.base_row = base
        self.device = device
        self.dtype = dtype
        self.base = load_pipeline(base, device, dtype)
        self.patcher = WeightPatcher(self.base)
        self._module_names: dict[str, dict[str, str]] = {}
        self._stack_layers: dict[str, list] = {}

    def _layers(self, row: CheckpointRow):
        """A LoRA file's layers on the base pipeline (stack LoRAs are read once and kept)."""
        tensors = load_tensors(row.path)
        check_finite(row.path, tensors)
        return read_adapter_layers(row.path, tensors, row.metadata, self.base, self._module_names)

    def activate(self, row: CheckpointRow, lora_scale: float, stack: tuple = ()):
        """(pipeline, text-encoder state name) with `row`'s weights in effect, and the companion LoRAs of
        `stack` ((CheckpointRow, strength) pairs) added on top."""
        if row.kind != "lora" and not stack:
            self.patcher.restore()
        if row.kind in ("full", "diffusers", "unet") and row.sha256 != self.base_row.sha256 and stack:
            raise CheckpointError(row.path, "a LoRA stack applies to the base model and LoRAs, not to other full "
                                            "or UNet checkpoints")
        if row.sha256 == self.base_row.sha256 and not stack:
            return self.base, "base"
        if row.kind == "lora" or stack:
            try:
                parts = [(row.path, self._layers(row), lora_scale)] if row.kind == "lora" else []
                for stacked, strength in stack:
                    if stacked.sha256 not in self._stack_layers:
                        self._stack_layers[stacked.sha256] = self._layers(stacked)
                    parts.append((stacked.path, self._stack_layers[stacked.sha256], strength))
                if len(parts) == 1:
                    self.patcher.apply(*parts[0])  # exactly the single-LoRA arithmetic
                else:
                    self.patcher.apply_many(parts)
            except CheckpointError:
                self.patcher.restore()
                raise
            touches_text = any(layer.component != "unet" for _, layers, _ in parts for layer in layers)
            state = ";".join(f"{path}:{strength}" for path, _, strength in parts)
            return self.base, (f"lora:{state}" if touches_text else "base")
        if row.kind == "unet":
            return self._with_unet(row), "base"
        if row.arch != self.base_row.arch:
            raise CheckpointError(row.path, f"checkpoint is {row.arch} but the run's base {self.base_row.stem} "
                                            f"is {self.base_row.arch}")
        config = self.base_row.path if self.base_row.kind == "diffusers" else self.base_row.config_path
        return load_pipeline(row, self.device, self.dtype, config), f"pipeline:{row.sha256}"

    def _with_unet(self, row: CheckpointRow):
        from diffusers import UNet2DConditionModel

        tensors = load_tensors(row.path)
        check_finite(row.path, tensors)
        unet = UNet2DConditionModel.from_config(self.base.unet.config)
        state = _unet_state_dict(row, tensors, self.base.unet.config)
        missing, unexpected = unet.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(row.path, f"UNet weights do not fit the base's UNet: {len(missing)} missing, "
                                            f"{len(unexpected)} unexpected keys (e.g. {(missing or unexpected)[0]})")
        components = dict(self.base.components)
        components["unet"] = unet.to(self.device, self.dtype)
        pipe = type(self.base)(**components)
        pipe.set_progress_bar_config(disable=True)
        return _for_sampling(pipe)

    def close(self) -> None:
        self.patcher.restore()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def native_size(row: CheckpointRow) -> int:
    """The image side a base model was trained at: from a diffusers folder's UNet and VAE configs (the UNet's
    latent side times the VAE's downscale, 2 per block after the first: 8 for SD's four blocks), else by arch."""
    import json

    folder = Path(row.config_path or row.path)
    unet, vae = folder / "unet" / "config.json", folder / "vae" / "config.json"
    if unet.exists():
        latent_side = int(json.loads(unet.read_text()).get("sample_size", 64))
        blocks = len(json.loads(vae.read_text()).get("block_out_channels", [0] * 4)) if vae.exists() else 4
        return latent_side * 2 ** (blocks - 1)
    return 1024 if row.arch == "sdxl" else 512
