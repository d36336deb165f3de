"""Recognise what a checkpoint is (LoRA, full model, UNet, diffusers folder; SD1.5 or SDXL) from its keys."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from evalsvc.adapters.kohya_format import COMPONENT_PREFIXES, algorithm_of
from evalsvc.errors import CheckpointError
from evalsvc.checkpoints.hashing import sha256_file, sha256_file_and_data, sha256_folder
from evalsvc.checkpoints.naming import checkpoint_file_name, checkpoint_stem, parse_checkpoint_name
from evalsvc.checkpoints.pickled import PICKLE_SUFFIXES, load_pickled
from evalsvc.checkpoints.safetensors_file import read_header

KINDS = ("lora", "full", "unet", "diffusers")
ARCHS = ("sd15", "sdxl")
LORA_FORMATS = ("kohya", "peft")
SUPPORTED = "(sd15 and sdxl are)"

KOHYA_PREFIXES = tuple(COMPONENT_PREFIXES)  # kohya's, and LyCORIS's generic `lycoris_`
PEFT_MARKERS = (".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight",
                "_lora.down.weight", "_lora.up.weight")
PEFT_MAGNITUDE = "lora_magnitude_vector"
PEFT_SUFFIXES = PEFT_MARKERS + (PEFT_MAGNITUDE, PEFT_MAGNITUDE + ".weight")
# Tensors whose second axis is a module's input width (the others are ranks, factors or scales).
INPUT_WIDTH_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight")
LDM_UNET = "model.diffusion_model."

# Key patterns that only one architecture has (kohya keys use "_" where diffusers/PEFT use ".").
SDXL_KEYS = re.compile(
    r"^lora_te[12]_|^lora_unet_(input_blocks|output_blocks|middle_block)_"
    r"|^(base_model\.model\.)?text_encoder_2\.|transformer_blocks[._][1-9]|up_blocks[._]0[._]attentions"
)
SD15_KEYS = re.compile(r"^lora_te_|down_blocks[._]0[._]attentions|up_blocks[._]3[._]attentions|down_blocks[._]3[._]")
# Input width of the cross-attention key projection: the text embedding width of the base model.
CROSS_ATTN_K = re.compile(r"attn2[._](processor[._])?to_k")
CROSS_ATTN_ARCH = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


class A1111Hashes:
    """The short hashes A1111 shows, derived from `sha256` and `addnet_hash`."""

    sha256: str
    addnet_hash: str | None

    @property
    def model_hash(self) -> str:
        """A1111's "Model hash": the first 10 hex digits of the file's sha256."""
        return self.sha256[:10]

    @property
    def short_hash(self) -> str:
        """A1111's LoRA short hash: the first 12 hex digits of the addnet hash."""
        return (self.addnet_hash or self.sha256)[:12]


@dataclass(frozen=True)
class CheckpointInfo(A1111Hashes):
    """What a checkpoint is and where it came from in its training run."""

    path: Path
    kind: str  # "lora" | "full" | "unet" | "diffusers"
    arch: str  # "sd15" | "sdxl"
    lora_format: str | None  # "kohya" | "peft" for LoRAs, else None
    epoch: int | None
    step: int | None
    ema: bool
    metadata: dict[str, str] = field(repr=False)  # the safetensors __metadata__; {} otherwise
    sha256: str  # of the whole file, or sha256_folder for a diffusers folder
    addnet_hash: str | None  # sha256 of the data after the safetensors header

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if (self.kind == "lora") != (self.lora_format in LORA_FORMATS):
            raise ValueError(f"lora_format {self.lora_format!r} does not fit kind {self.kind!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def file_name(self) -> str:
        """The name it goes by (`naming.checkpoint_file_name`): `checkpoint-500.safetensors` for
        `checkpoint-500/pytorch_lora_weights.safetensors`."""
        return checkpoint_file_name(self.path)


def inspect_checkpoint(path, *, allow_pickle: bool = False, ema: bool | None = None) -> CheckpointInfo:
    """Identify a checkpoint file or diffusers folder; ``ema`` overrides what the file and name say."""
    path = Path(path)
    if path.is_dir():
        return _inspect_folder(path, ema)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = read_header(path)
        shapes = {key: entry.shape for key, entry in header.tensors.items()}
        metadata = header.metadata
    elif suffix in PICKLE_SUFFIXES:
        shapes = {key: tuple(t.shape) for key, t in load_pickled(path, allow_pickle).items()}
        metadata = {}
    else:
        raise CheckpointError(
            path, f"unsupported file type {suffix or '(none)'!r}: expected .safetensors, "
            f"{', '.join(PICKLE_SUFFIXES)} or a diffusers folder"
        )
    kind, arch, lora_format = classify(path, shapes, metadata)
    epoch, step, is_ema = _progress(path, checkpoint_stem(path), metadata, ema)
    if suffix == ".safetensors":
        sha256, addnet = sha256_file_and_data(path, header.data_offset)
    else:
        sha256, addnet = sha256_file(path), None
    return CheckpointInfo(path, kind, arch, lora_format, epoch, step, is_ema, dict(metadata), sha256, addnet)


def classify(path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> tuple[str, str, str | None]:
    """(kind, arch, lora_format) from tensor names, shapes and metadata; raise for anything unsupported."""
    keys = sorted(shapes)
    if not keys:
        raise CheckpointError(path, "contains no tensors")
    evidence = {}  # source -> arch, for the cross-check below
    if (meta_arch := _arch_from_metadata(path, metadata)) is not None:
        evidence["metadata"] = meta_arch
    if (width_arch := _arch_from_cross_attention(path, shapes)) is not None:
        evidence["tensor shapes"] = width_arch
    lora_format = _lora_format(path, keys)
    if lora_format is not None:
        kind, key_arch = "lora", _first_match(keys, SDXL_KEYS, "sdxl") or _first_match(keys, SD15_KEYS, "sd15")
        if key_arch is None and not evidence and any(k.startswith(("lora_unet_", "lycoris_")) for k in keys):
            key_arch = "sd15"  # kohya writes SDXL UNet keys with SGM names, SD1 keys with diffusers names
    elif any(k.startswith(LDM_UNET) for k in keys):
        kind, key_arch = _ldm_single_file(path, keys)
    elif "conv_in.weight" in shapes and "time_embedding.linear_1.weight" in shapes:
        kind, key_arch = "unet", "sdxl" if "add_embedding.linear_1.weight" in shapes else "sd15"
    else:
        raise CheckpointError(path, f"unrecognised key format (first keys: {', '.join(keys[:3])})")
    if key_arch is not None:
        evidence["tensor names"] = key_arch
    return kind, _settle_arch(path, evidence), lora_format


def _lora_format(path, keys: list[str]) -> str | None:
    """"kohya" (kohya-style names: LoRA and the LyCORIS family), "peft" or None (not an adapter); refuse what
    we would apply wrongly."""
    if example := next((k for k in keys if k.startswith(("oft_unet_", "oft_te"))), None):
        raise CheckpointError(path, f"kohya sd-scripts OFT network ({example!r}) is not supported; LyCORIS's OFT and "
                                    "BOFT (lora_unet_… .oft_blocks) are")
    kohya = [k for k in keys if k.startswith(KOHYA_PREFIXES)]
    peft = [k for k in keys if any(m in k for m in PEFT_MARKERS) or PEFT_MAGNITUDE in k]
    if not kohya and not peft:
        return None
    if kohya and peft:
        raise CheckpointError(path, f"mixes kohya ({kohya[0]!r}) and PEFT ({peft[0]!r}) LoRA keys")
    if not kohya:
        if odd := [k for k in keys if not k.endswith(PEFT_SUFFIXES)]:
            raise CheckpointError(path, f"unsupported PEFT tensor {odd[0]!r}: only LoRA, rsLoRA and DoRA "
                                        "(lora_A/lora_B/lora_magnitude_vector) are applied")
        return "peft"
    if stray := [k for k in keys if not k.startswith(KOHYA_PREFIXES)]:
        raise CheckpointError(path, f"kohya-style adapter also holds tensors of no adapter module (e.g. {stray[0]!r})")
    modules: dict[str, set[str]] = {}
    for key in kohya:
        stem, _, name = key.partition(".")
        modules.setdefault(stem, set()).add(name)
    for stem, names in sorted(modules.items()):
        algorithm_of(path, stem, names)
    return "kohya"


def _ldm_single_file(path, keys: list[str]) -> tuple[str, str]:
    """(kind, arch) for original (LDM/SGM) single-file checkpoints."""
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    sdxl_unet = has(LDM_UNET + "label_emb.")
    if has("cond_stage_model.model."):
        raise CheckpointError(
            path, f"SD2 checkpoint (OpenCLIP text encoder cond_stage_model.model.*) is not supported {SUPPORTED}"
        )
    has_vae, has_te = has("first_stage_model."), has("cond_stage_model.") or has("conditioner.")
    if not has_vae and not has_te:
        return "unet", "sdxl" if sdxl_unet else "sd15"
    if not has_vae:
        raise CheckpointError(
            path, "single-file checkpoint has a UNet and text encoder but no VAE (first_stage_model.*)"
        )
    if not has_te:
        raise CheckpointError(
            path, "single-file checkpoint has a UNet and VAE but no text encoder (cond_stage_model.* or conditioner.*)"
        )
    if has("conditioner.embedders.1.model.") or sdxl_unet:
        return "full", "sdxl"
    if has("cond_stage_model.transformer."):
        return "full", "sd15"
    raise CheckpointError(path, f"unrecognised text encoder layout (first keys: {', '.join(keys[:3])})")


def _arch_from_metadata(path, metadata: dict[str, str]) -> str | None:
    """Arch named by kohya's ss_base_model_version / ss_v2 or by modelspec.architecture, if any."""
    found = {}
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sd_v2") or metadata.get("ss_v2", "").lower() == "true":
        shown = version or "sd_v2"
        raise CheckpointError(path, f"SD2 checkpoint (ss_base_model_version={shown!r}) is not supported {SUPPORTED}")
    if version:
        found["ss_base_model_version"] = _named_arch(path, "ss_base_model_version", version, sdxl="sdxl", sd15="sd_v1")
    if spec := metadata.get("modelspec.architecture", ""):
        if spec.startswith("stable-diffusion-v2"):
            raise CheckpointError(
                path, f"SD2 checkpoint (modelspec.architecture={spec!r}) is not supported {SUPPORTED}"
            )
        found["modelspec.architecture"] = _named_arch(
            path, "modelspec.architecture", spec, sdxl="stable-diffusion-xl", sd15="stable-diffusion-v1"
        )
    if len(set(found.values())) > 1:
        raise CheckpointError(path, f"metadata disagrees about the base model: {found}")
    return next(iter(found.values()), None)


def _named_arch(path, key: str, value: str, *, sdxl: str, sd15: str) -> str:
    if value.startswith(sdxl):
        return "sdxl"
    if value.startswith(sd15):
        return "sd15"
    raise CheckpointError(path, f"{key}={value!r} is not supported {SUPPORTED}")


def _arch_from_cross_attention(path, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Arch implied by the text-embedding width that cross-attention reads (768, 1024 or 2048)."""
    for key, shape in shapes.items():
        adapter = key.startswith(KOHYA_PREFIXES) or any(m in key for m in PEFT_SUFFIXES)
        if adapter and not key.endswith(INPUT_WIDTH_SUFFIXES):
            continue
        if CROSS_ATTN_K.search(key) and len(shape) == 2:
            arch = CROSS_ATTN_ARCH.get(shape[1])
            if arch == "sd2":
                raise CheckpointError(
                    path, f"SD2 checkpoint ({key!r} reads 1024-wide text embeddings) is not supported {SUPPORTED}"
                )
            return arch
    return None


def _first_match(keys: list[str], pattern: re.Pattern, arch: str) -> str | None:
    return arch if any(pattern.search(k) for k in keys) else None


def _settle_arch(path, evidence: dict[str, str]) -> str:
    if len(set(evidence.values())) > 1:
        said = ", ".join(f"{source} say {arch}" for source, arch in evidence.items())
        raise CheckpointError(path, f"conflicting base model evidence: {said}")
    if not evidence:
        raise CheckpointError(
            path, "cannot tell SD1.5 from SDXL: no ss_base_model_version or modelspec.architecture "
            "metadata and no architecture-specific tensors"
        )
    return next(iter(evidence.values()))


def _inspect_folder(path: Path, ema: bool | None) -> CheckpointInfo:
    """A diffusers pipeline folder, recognised by its model_index.json."""
    index_file = path / "model_index.json"
    if not index_file.is_file():
        if path.name.endswith("-state"):
            raise CheckpointError(path, "kohya training-state folder, not a model; pass a checkpoint file instead")
        raise CheckpointError(path, "directory has no model_index.json, so it is not a diffusers pipeline folder")
    class_name = _read_json(path, index_file).get("_class_name")
    if not isinstance(class_name, str):
        raise CheckpointError(path, f"model_index.json has no _class_name string (got {class_name!r})")
    if "XL" in class_name:
        arch = "sdxl"
    elif "StableDiffusion" in class_name and not class_name.startswith("StableDiffusion3"):
        arch = "sd15"
    else:
        raise CheckpointError(path, f"model_index.json _class_name {class_name!r} is not an SD1.5 or SDXL pipeline")
    unet_config = path / "unet" / "config.json"
    if unet_config.is_file() and _read_json(path, unet_config).get("cross_attention_dim") == 1024:
        raise CheckpointError(path, f"SD2 pipeline (unet cross_attention_dim 1024) is not supported {SUPPORTED}")
    epoch, step, is_ema = _progress(path, path.name, {}, ema)
    return CheckpointInfo(path, "diffusers", arch, None, epoch, step, is_ema, {}, sha256_folder(path), None)


def _read_json(path: Path, file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(path, f"{file.name} is not readable JSON ({' '.join(str(e).split())})") from None
    if not isinstance(value, dict):
        raise CheckpointError(path, f"{file.name} is a JSON {type(value).__name__}, expected an object")
    return value


def _progress(path, stem: str, metadata: dict[str, str], ema: bool | None) -> tuple[int | None, int | None, bool]:
    """(epoch, step, ema): metadata first, then the file name; an explicit ``ema`` wins."""
    name = parse_checkpoint_name(stem)
    epoch = _meta_int(path, metadata, "ss_epoch")
    step = _meta_int(path, metadata, "ss_steps")
    if ema is None:
        ema = _meta_bool(path, metadata, "evalsvc.ema")
    if ema is None:
        ema = _meta_bool(path, metadata, "ss_ema")
    return (
        name.epoch if epoch is None else epoch,
        name.step if step is None else step,
        name.ema if ema is None else ema,
    )


def _meta_int(path, metadata: dict[str, str], key: str) -> int | None:
    if key not in metadata:
        return None
    value = metadata[key].strip()
    if not re.fullmatch(r"\d+", value):
        raise CheckpointError(path, f"metadata {key}={metadata[key]!r} is not a non-negative integer")
    return int(value)


def _meta_bool(path, metadata: dict[str, str], key: str) -> bool | None:
    if key not in metadata:
        return None
    value = metadata[key].strip().lower()
    if value not in ("true", "1", "false", "0"):
        raise CheckpointError(path, f"metadata {key}={metadata[key]!r} is not true/false")
    return value in ("true", "1")
