"""A1111 "infotext": the `parameters` PNG text chunk that lets any image be re-created.

`Infotext` is what made one image; `render` writes it as A1111 does, `comfy_workflow` draws the same
cell as a ComfyUI graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .. import __version__
from .samplers import resolve_sampler


@dataclass(frozen=True)
class LoraUse:
    """A LoRA in effect for one image, at the strength it was applied with."""

    name: str  # the file stem: `<lora:NAME:STRENGTH>` and the `Lora hashes` key
    file_name: str  # the file ComfyUI's LoraLoader loads (`lora_name`)
    strength: float
    short_hash: str  # A1111's 12-digit LoRA hash


@dataclass(frozen=True)
class Infotext:
    """Every value besides the weights that made one image, and the files that hold the weights."""

    prompt: str  # as sampled, without `<lora:…>` tags (render adds them)
    negative: str
    steps: int
    sampler: str  # any accepted spelling (samplers.py); render shows A1111's display name
    cfg: float
    seed: int
    width: int
    height: int
    model_hash: str | None = None  # A1111's: sha256[:10] of a single file; None for a diffusers folder
    model: str | None = None  # A1111's model name: the file stem, or a diffusers folder's name
    model_file: str | None = None  # the single file ComfyUI's CheckpointLoaderSimple loads (`ckpt_name`)
    unet_file: str | None = None  # a UNet-only checkpoint sampled in the model's place (ComfyUI's UNETLoader)
    clip_skip: int = 1  # A1111 convention: 1 = last layer, 2 = penultimate
    arch: str = "sd15"  # "sd15" | "sdxl"
    loras: tuple[LoraUse, ...] = ()  # the candidate LoRA first, then the stacked ones
    precision: str = "float32"  # the torch dtype sampled in, as `--precision` takes it
    device: str = "cpu"  # the torch device type sampled on

    def __post_init__(self):
        if self.clip_skip < 1:
            raise ValueError(f"clip_skip must be at least 1, got {self.clip_skip}")
        resolve_sampler(self.sampler)

    @property
    def default_numerics(self) -> bool:
        """float32 on the CPU: the only combination infotext leaves unsaid."""
        return (self.precision, self.device) == ("float32", "cpu")

    def render(self) -> str:
        spec = resolve_sampler(self.sampler)
        # A1111 applies a LoRA named in the prompt; with these tags the infotext re-creates the image there.
        prompt = " ".join([self.prompt, *(f"<lora:{lora.name}:{lora.strength:g}>" for lora in self.loras)])
        fields = [
            ("Steps", self.steps),
            ("Sampler", spec.a1111_name),
            ("Schedule type", spec.schedule_type),
            ("CFG scale", _number(self.cfg)),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model hash", self.model_hash),
            ("Model", self.model),
            ("Clip skip", self.clip_skip if self.clip_skip > 1 else None),
            ("Lora hashes", ", ".join(f"{lora.name}: {lora.short_hash}" for lora in self.loras) or None),
            # Not A1111 fields (its PNG Info lists them and applies nothing): the numerics sampled with.
            ("Precision", None if self.default_numerics else self.precision),
            ("Device", None if self.default_numerics else self.device),
            ("Version", f"evalsvc {__version__}"),
        ]
        params = ", ".join(f"{key}: {_quote(value)}" for key, value in fields if value not in (None, ""))
        lines = [prompt]
        if self.negative:
            lines.append(f"Negative prompt: {self.negative}")
        lines.append(params)
        return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:g}"


def _quote(value) -> str:
    """A1111 JSON-quotes a value that holds `,`, `:` or a newline."""
    text = str(value)
    if any(ch in text for ch in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def parse_infotext(text: str) -> dict[str, str]:
    """Parse infotext as A1111's reader does: prompt, negative and the key/value line."""
    import re

    lines = text.strip().split("\n")
    params_line = lines[-1]
    body = lines[:-1]
    negative = ""
    prompt_lines = []
    for i, line in enumerate(body):
        if line.startswith("Negative prompt:"):
            negative = "\n".join([line[len("Negative prompt:"):].strip()] + body[i + 1:])
            break
        prompt_lines.append(line)
    result = {"Prompt": "\n".join(prompt_lines), "Negative prompt": negative}
    # The pattern of A1111's modules/infotext_utils.py (re_param).
    for key, value in re.findall(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', params_line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        result[key.strip()] = value
    return result
