"""The toy world: one flat-coloured shape at a position on a plain background, with its caption.

Every image is drawn from a `Scene` (colour, shape, position, background) plus a little jitter in
size and place, so the truth behind each picture is known exactly. Captions are compositional:
"a red circle on the left, white background". `purple` is the concept the base model never sees;
the demo's LoRA teaches it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # drawn 4x larger, then downscaled: anti-aliased edges like a real image's

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 50, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (125, 125, 125),
}
SHAPES = ("circle", "square", "triangle")
# Centre of the shape, as fractions of the image side, and the words the caption uses.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "center": (0.5, 0.5),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
HELD_OUT_COLOUR = "purple"
KNOWN_COLOURS = tuple(c for c in COLOURS if c != HELD_OUT_COLOUR)
HALF_SIZE = (0.15, 0.19)  # half the shape's extent, as a fraction of the image side
JITTER = 0.04  # of the image side, in x and y


@dataclass(frozen=True)
class Scene:
    """What an image shows; `caption` is how the world says it."""

    colour: str
    shape: str
    position: str
    background: str

    def __post_init__(self):
        for value, allowed, name in ((self.colour, COLOURS, "colour"), (self.shape, SHAPES, "shape"),
                                     (self.position, POSITIONS, "position"),
                                     (self.background, BACKGROUNDS, "background")):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r} (known: {', '.join(allowed)})")

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} {POSITION_PHRASES[self.position]}, {self.background} background"


def all_scenes(colours=tuple(COLOURS)) -> list[Scene]:
    """Every combination of the given colours with every shape, position and background."""
    return [Scene(c, s, p, b) for c, s, p, b in itertools.product(colours, SHAPES, POSITIONS, BACKGROUNDS)]


def draw(scene: Scene, rng: random.Random, fill: tuple[int, int, int] | None = None,
         backgrounds: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """The scene as a 64x64 RGB image; `rng` draws the jitter in size and position.

    `fill` paints the shape in another colour than the scene's (the VAE's random-colour training);
    `backgrounds` paints the backgrounds in another palette (a finetune with another look).
    """
    side = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("RGB", (side, side), (backgrounds or BACKGROUNDS)[scene.background])
    fx, fy = POSITIONS[scene.position]
    cx = (fx + rng.uniform(-JITTER, JITTER)) * side
    cy = (fy + rng.uniform(-JITTER, JITTER)) * side
    half = rng.uniform(*HALF_SIZE) * side
    pen = ImageDraw.Draw(image)
    fill = fill or COLOURS[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif scene.shape == "square":
        s = half * 0.89  # same area as the circle, so size does not give the shape away
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:  # an upright isosceles triangle as wide as it is tall, again with the circle's area
        h = half * 1.25
        pen.polygon(((cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)), fill=fill)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def sample_scenes(count: int, seed: int, colours=KNOWN_COLOURS) -> list[Scene]:
    """`count` scenes cycling through every combination (shuffled), so each appears equally often."""
    rng = random.Random(f"scenes:{seed}")
    pool = all_scenes(colours)
    scenes = []
    while len(scenes) < count:
        rng.shuffle(pool)
        scenes.extend(pool)
    return scenes[:count]


def write_dataset(folder: Path, count: int, seed: int, colours=KNOWN_COLOURS, repeats: int = 1,
                  backgrounds: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """A kohya-layout folder `folder/<repeats>_toyworld` of PNGs with same-named `.txt` captions (the
    backgrounds in another palette when `backgrounds` is given; the captions still name them)."""
    target = Path(folder) / f"{repeats}_toyworld"
    target.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"draw:{seed}")
    for index, scene in enumerate(sample_scenes(count, seed, colours)):
        stem = target / f"{index:05d}"
        draw(scene, rng, backgrounds=backgrounds).save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(scene.caption + "\n", encoding="utf-8")
    return Path(folder)
