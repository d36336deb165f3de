"""A1111 "infotext": the `parameters` PNG text chunk that lets any image be re-created."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .. import __version__


@dataclass(frozen=True)
class Infotext:
    prompt: str
    negative: str
    steps: int
    sampler: str  # A1111 display name, e.g. "DPM++ 2M"
    schedule_type: str
    cfg: float
    seed: int
    width: int
    height: int
    model_hash: str | None = None
    model: str | None = None
    clip_skip: int | None = None
    lora_hashes: tuple[tuple[str, str], ...] = ()  # (file stem, short hash)

    def render(self) -> str:
        fields = [
            ("Steps", self.steps),
            ("Sampler", self.sampler),
            ("Schedule type", self.schedule_type),
            ("CFG scale", _number(self.cfg)),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model hash", self.model_hash),
            ("Model", self.model),
            ("Clip skip", self.clip_skip if self.clip_skip and self.clip_skip > 1 else None),
            ("Lora hashes", ", ".join(f"{stem}: {h}" for stem, h in self.lora_hashes) or None),
            ("Version", f"evalsvc {__version__}"),
        ]
        params = ", ".join(f"{key}: {_quote(value)}" for key, value in fields if value not in (None, ""))
        lines = [self.prompt]
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
