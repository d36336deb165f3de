"""A setting: every pixel-changing value of a grid cell other than its checkpoint, prompt and seed.

Scores are only ever compared within one setting, or between settings named explicitly (a
checkpoint's best setting, a robust mean over a declared range). A grid link (`grid_cells`) records
the setting its cell was requested at; one image may belong to several settings (the base model's
image is the same at every LoRA strength). An axis value of None means "each prompt's own value",
for suites whose prompts carry their own (kohya's `--s 30 --l 6`); such a setting covers the whole
suite as written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .errors import InputError

AXES = ("cfg", "steps", "sampler", "size", "lora_scale", "clip_skip", "precision", "base", "stack")
AXIS_ALIASES = {"strength": "lora_scale", "lora": "lora_scale", "scale": "lora_scale", "clip-skip": "clip_skip",
                "lora-scale": "lora_scale"}
PER_PROMPT = "per prompt"


@dataclass(frozen=True)
class StackedLora:
    """A companion LoRA applied to every cell at a fixed strength (a speed or style LoRA)."""

    sha256: str
    scale: float


@dataclass(frozen=True)
class Setting:
    cfg: float | None = None
    steps: int | None = None
    sampler: str | None = None
    size: tuple[int, int] | None = None  # (width, height)
    lora_scale: float = 1.0
    clip_skip: int = 1
    precision: str = "float32"
    base: str | None = None  # sha256 of the base model the cell was sampled on (None: the run has none)
    stack: tuple[StackedLora, ...] = ()

    @property
    def key(self) -> str:
        """The canonical text stored in `grid_cells.setting`."""
        return json.dumps({
            "cfg": self.cfg, "steps": self.steps, "sampler": self.sampler,
            "size": None if self.size is None else f"{self.size[0]}x{self.size[1]}",
            "lora_scale": self.lora_scale, "clip_skip": self.clip_skip, "precision": self.precision,
            "base": self.base, "stack": [[s.sha256, s.scale] for s in self.stack],
        }, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_key(cls, text: str) -> "Setting":
        data = json.loads(text)
        size = data.get("size")
        return cls(
            cfg=None if data.get("cfg") is None else float(data["cfg"]),
            steps=None if data.get("steps") is None else int(data["steps"]),
            sampler=data.get("sampler"),
            size=None if size is None else tuple(int(v) for v in size.split("x")),
            lora_scale=float(data.get("lora_scale", 1.0)), clip_skip=int(data.get("clip_skip", 1)),
            precision=data.get("precision", "float32"), base=data.get("base"),
            stack=tuple(StackedLora(sha, float(scale)) for sha, scale in data.get("stack", ())),
        )

    def value(self, axis: str, names: Mapping[str, str] | None = None) -> str:
        """One axis value as the user writes it (`--judge at:steps=20`); names: sha256 -> file name."""
        names = names or {}
        value = getattr(self, axis)
        if axis == "stack":
            return "+".join(names.get(s.sha256, s.sha256[:12]) + (f":{s.scale:g}" if s.scale != 1 else "")
                            for s in value) or "none"
        if value is None:
            return "none" if axis == "base" else PER_PROMPT
        if axis == "base":
            return names.get(value, value[:12])
        if axis == "size":
            return f"{value[0]}x{value[1]}"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def as_dict(self, names: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every axis value, as text (the report JSON's `setting`)."""
        return {axis: self.value(axis, names) for axis in AXES}

    def label(self, axes: Iterable[str] = AXES, names: Mapping[str, str] | None = None) -> str:
        """`CFG 5, 20 steps, LoRA 0.8` over the named axes."""
        return ", ".join(_phrase(axis, self.value(axis, names)) for axis in axes)

    def pins(self, axes: Iterable[str], names: Mapping[str, str] | None = None) -> str:
        """`cfg=5,steps=20` over the named axes: the form `--judge at:` and Compare accept."""
        return ",".join(f"{axis}={self.value(axis, names)}" for axis in axes)

    def sort_key(self) -> tuple:
        return tuple((getattr(self, a) is None, _sortable(self.value(a))) for a in AXES)

    def with_base(self, base: str | None) -> "Setting":
        return replace(self, base=base)


def _sortable(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _phrase(axis: str, value: str) -> str:
    return {"cfg": f"CFG {value}", "steps": f"{value} steps", "sampler": value, "size": value,
            "lora_scale": f"LoRA {value}", "clip_skip": f"clip skip {value}", "precision": value,
            "base": f"on {value}", "stack": "no stack" if value == "none" else f"stack +{value}"}[axis]


def varying_axes(settings: Iterable[Setting]) -> tuple[str, ...]:
    """The axes on which `settings` differ, in AXES order."""
    settings = list(settings)
    return tuple(a for a in AXES if len({s.value(a) for s in settings}) > 1)


def short_label(setting: Setting, among: Iterable[Setting], names: Mapping[str, str] | None = None) -> str:
    """The setting by the axes that tell it apart from the others (CFG alone when nothing varies)."""
    axes = varying_axes(among) or ("cfg",)
    return setting.label(axes, names)


def canonical_axis(name: str) -> str:
    axis = AXIS_ALIASES.get(name.strip().lower(), name.strip().lower())
    if axis not in AXES:
        raise InputError(f"unknown setting axis {name!r}; axes: {', '.join(AXES)} (strength = lora_scale)")
    return axis


def parse_pins(text: str) -> dict[str, str]:
    """`steps=20,cfg=5` -> {"steps": "20", "cfg": "5"}; values are matched by `matches`."""
    pins: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise InputError(f"expected AXIS=VALUE, got {part!r} (for example steps=20,cfg=5)")
        axis = canonical_axis(name)
        if axis in pins:
            raise InputError(f"axis {axis} is pinned twice in {text!r}")
        pins[axis] = value.strip()
    return pins


def same_value(setting: Setting, axis: str, wanted: str, names: Mapping[str, str] | None = None) -> bool:
    """Whether the setting's value on `axis` is the one the user wrote, or one of `A|B` (numbers compare as
    numbers, samplers by any spelling, bases by file name, stem or hash prefix)."""
    if "|" in wanted:
        return any(same_value(setting, axis, w.strip(), names) for w in wanted.split("|") if w.strip())
    have = setting.value(axis, names)
    if have == wanted:
        return True
    if axis in ("cfg", "lora_scale", "steps", "clip_skip"):
        try:
            return math.isclose(float(have), float(wanted))
        except ValueError:
            return False
    if axis == "sampler" and setting.sampler is not None:
        from .sampling.samplers import resolve_sampler

        try:
            return resolve_sampler(wanted).name == setting.sampler
        except InputError:
            return False
    if axis == "size":
        return have == wanted.lower().replace(" ", "")
    if axis == "base" and setting.base is not None:
        stem = have.rsplit(".", 1)[0]
        return wanted in (stem, have) or (len(wanted) >= 8 and setting.base.startswith(wanted.lower()))
    return False


def select(settings: Iterable[Setting], pins: Mapping[str, str], names: Mapping[str, str] | None = None,
           what: str = "--judge at:") -> list[Setting]:
    """The settings whose pinned axes have the pinned values; InputError naming the values that exist
    when a pinned value was never sampled."""
    settings = list(settings)
    chosen = settings
    for axis, wanted in pins.items():
        existing = sorted({s.value(axis, names) for s in chosen}, key=_sortable)
        for one in (w.strip() for w in wanted.split("|")):
            if not any(same_value(s, axis, one, names) for s in chosen):
                raise InputError(f"{what} {axis}={one} was never sampled; {axis} values that exist: "
                                 f"{', '.join(existing)}")
        chosen = [s for s in chosen if same_value(s, axis, wanted, names)]
    return chosen
