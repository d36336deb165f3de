"""The toy world: a flat-coloured shape at a position on a plain background, with its caption.

Every image is drawn from a `Scene` (what the caption says: colour, shape, position, background, and
optionally a rendering style or the character) plus a `Detail` the caption does not fix (the shape's exact
place and size, a small marker square somewhere else, a planted defect), so the truth behind each picture
is known exactly. Captions are compositional: "a red circle on the left, white background".

What LoRAs teach, and the base never sees:
- the concept: `purple`, a colour;
- the character: `toki`, a yellow circle with a blue band down its middle (the uncaptioned marking that makes
  it this character and not any yellow circle), in any position, background and size;
- the style: `shaded`, the lower part of any shape in a darker shade of its colour.

`Look` says how much the uncaptioned detail varies: `LOOK_V1` (jitter only, no marker: the world the
committed base was trained on) or `LOOK_V2` (size variety and a marker at a random place, so that seeds
genuinely vary and a copy of a training image is measurably different from a new picture of its caption).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

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
# The marker: a small square in one of these colours, at a random free place; never captioned.
MARKERS: dict[str, tuple[int, int, int]] = {
    "cyan": (40, 200, 210),
    "pink": (250, 140, 190),
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
STYLES = ("plain", "shaded")
STYLE_WORD = "shaded"  # the caption's last words for the shaded style: "..., white background, shaded"
SHADE = 0.55  # the shaded part's colour, as a factor of the shape's
SHADED_SHARE = 0.4  # of the shape's height, from the bottom

CHARACTER = "toki"
CHARACTER_COLOUR, CHARACTER_SHAPE, CHARACTER_MARKING = "yellow", "circle", "blue"
BAND_HALF_WIDTH = 0.3  # of the shape's half size: the character's band down its middle

DEFECT_HALF = 0.4  # of the shape's half size: the planted defect, a square hole at the shape's centroid


@dataclass(frozen=True)
class Scene:
    """What an image shows, as its caption says it; a character scene has the character's colour and shape."""

    colour: str
    shape: str
    position: str
    background: str
    style: str = "plain"
    character: bool = False

    def __post_init__(self):
        for value, allowed, name in ((self.colour, COLOURS, "colour"), (self.shape, SHAPES, "shape"),
                                     (self.position, POSITIONS, "position"),
                                     (self.background, BACKGROUNDS, "background"), (self.style, STYLES, "style")):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r} (known: {', '.join(allowed)})")
        if self.character and (self.colour, self.shape) != (CHARACTER_COLOUR, CHARACTER_SHAPE):
            raise ValueError(f"the character {CHARACTER!r} is a {CHARACTER_COLOUR} {CHARACTER_SHAPE}, "
                             f"not a {self.colour} {self.shape}")

    @property
    def subject(self) -> str:
        return CHARACTER if self.character else f"{self.colour} {self.shape}"

    @property
    def caption(self) -> str:
        text = f"a {self.subject} {POSITION_PHRASES[self.position]}, {self.background} background"
        return text + (f", {STYLE_WORD}" if self.style == "shaded" else "")


def character_scene(position: str, background: str, style: str = "plain") -> Scene:
    return Scene(CHARACTER_COLOUR, CHARACTER_SHAPE, position, background, style, character=True)


def all_scenes(colours=tuple(COLOURS), styles=("plain",)) -> list[Scene]:
    """Every combination of the given colours and styles with every shape, position and background."""
    return [Scene(c, s, p, b, style) for style, c, s, p, b in
            itertools.product(styles, colours, SHAPES, POSITIONS, BACKGROUNDS)]


def character_scenes(styles=("plain",)) -> list[Scene]:
    """The character in every position, background and given style."""
    return [character_scene(p, b, style) for style, p, b in itertools.product(styles, POSITIONS, BACKGROUNDS)]


@dataclass(frozen=True)
class Look:
    """How the uncaptioned detail varies: jitter of the shape's centre, range of its half size (fractions of
    the image side), and whether a marker square is drawn (its half size; 0: none)."""

    jitter: float = 0.04
    half_size: tuple[float, float] = (0.15, 0.19)
    marker_half: float = 0.0


LOOK_V1 = Look()
LOOK_V2 = Look(jitter=0.04, half_size=(0.11, 0.18), marker_half=0.06)  # the triangle still fits at every anchor


@dataclass(frozen=True)
class Detail:
    """What the caption leaves open in one picture (fractions of the image side)."""

    x: float
    y: float
    half: float
    marker: tuple[float, float, str] | None = None  # centre x, centre y, colour name
    marker_half: float = 0.0
    defect: bool = False


def random_detail(scene: Scene, rng: random.Random, look: Look = LOOK_V1) -> Detail:
    """The detail of one new picture of `scene` (the marker where it overlaps neither the shape nor the edge)."""
    fx, fy = POSITIONS[scene.position]
    x, y = fx + rng.uniform(-look.jitter, look.jitter), fy + rng.uniform(-look.jitter, look.jitter)
    half = rng.uniform(*look.half_size)
    if not look.marker_half:
        return Detail(x, y, half)
    colour = rng.choice(sorted(MARKERS))
    reach = half * 1.25 + look.marker_half + 0.03  # the triangle's extent is 1.25 half sizes
    edge = look.marker_half + 0.03
    while True:
        mx, my = rng.uniform(edge, 1 - edge), rng.uniform(edge, 1 - edge)
        if abs(mx - x) > reach or abs(my - y) > reach:
            return Detail(x, y, half, (mx, my, colour), look.marker_half)


def _outline(shape: str, cx: float, cy: float, half: float) -> list[tuple[float, float]] | tuple:
    if shape == "circle":
        return (cx - half, cy - half, cx + half, cy + half)
    if shape == "square":
        s = half * 0.89  # same area as the circle, so size does not give the shape away
        return (cx - s, cy - s, cx + s, cy + s)
    h = half * 1.25  # an upright isosceles triangle as wide as it is tall, again with the circle's area
    return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]


def centroid(shape: str, cx: float, cy: float, half: float) -> tuple[float, float]:
    """Where the shape's area is centred (the triangle's lies a third of the way up from its base)."""
    return (cx, cy + half * 1.25 / 3) if shape == "triangle" else (cx, cy)


def _mask(side: int, draw_on) -> Image.Image:
    layer = Image.new("L", (side, side), 0)
    draw_on(ImageDraw.Draw(layer))
    return layer


def render(scene: Scene, detail: Detail, fill: tuple[int, int, int] | None = None,
           backgrounds: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """`scene` with `detail` as a 64x64 RGB image.

    `fill` paints the shape in another colour than the scene's (the VAE's random-colour training);
    `backgrounds` paints the backgrounds in another palette (a finetune with another look).
    """
    side = IMAGE_SIZE * SUPERSAMPLE
    background = (backgrounds or BACKGROUNDS)[scene.background]
    image = Image.new("RGB", (side, side), background)
    cx, cy, half = detail.x * side, detail.y * side, detail.half * side
    colour = fill or COLOURS[scene.colour]
    outline = _outline(scene.shape, cx, cy, half)
    paint = {"circle": "ellipse", "square": "rectangle", "triangle": "polygon"}[scene.shape]
    shape = _mask(side, lambda pen: getattr(pen, paint)(outline, fill=255))
    image.paste(colour, mask=shape)
    if scene.character:
        band = BAND_HALF_WIDTH * half
        stripe = _mask(side, lambda pen: pen.rectangle((cx - band, 0, cx + band, side), fill=255))
        image.paste(COLOURS[CHARACTER_MARKING], mask=ImageChops.multiply(stripe, shape))
    if scene.style == "shaded":  # the lower part of the shape, marking included, in a darker shade
        extent = half * {"circle": 1.0, "square": 0.89, "triangle": 1.25}[scene.shape]
        top = cy + extent * (1 - 2 * SHADED_SHARE)
        lower = _mask(side, lambda pen: pen.rectangle((0, top, side, side), fill=255))
        darker = image.point(lambda v: round(v * SHADE))
        image.paste(darker, mask=ImageChops.multiply(lower, shape))
    pen = ImageDraw.Draw(image)
    if detail.defect:
        hx, hy = centroid(scene.shape, cx, cy, half)
        d = DEFECT_HALF * half
        pen.rectangle((hx - d, hy - d, hx + d, hy + d), fill=background)
    if detail.marker:
        mx, my, name = detail.marker
        m = detail.marker_half * side
        pen.rectangle((mx * side - m, my * side - m, mx * side + m, my * side + m), fill=MARKERS[name])
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def draw(scene: Scene, rng: random.Random, fill: tuple[int, int, int] | None = None,
         backgrounds: dict[str, tuple[int, int, int]] | None = None, look: Look = LOOK_V1) -> Image.Image:
    """A new picture of `scene`: its detail drawn from `rng` as `look` says (see `render` for the rest)."""
    return render(scene, random_detail(scene, rng, look), fill, backgrounds)


def sample_scenes(count: int, seed: int, colours=KNOWN_COLOURS, styles=("plain",)) -> list[Scene]:
    """`count` scenes cycling through every combination (shuffled), so each appears equally often."""
    return cycle_scenes(all_scenes(colours, styles), count, seed)


def cycle_scenes(pool: list[Scene], count: int, seed: int) -> list[Scene]:
    """`count` scenes from `pool`, each round through it in a new shuffled order."""
    rng = random.Random(f"scenes:{seed}")
    pool = list(pool)
    scenes = []
    while len(scenes) < count:
        rng.shuffle(pool)
        scenes.extend(pool)
    return scenes[:count]


@dataclass(frozen=True)
class DatasetSpec:
    """A training folder to write: `count` pictures of `scenes` (cycled; default every plain scene of
    `colours`), their detail drawn as `look` says, the images numbered in `defects` with the planted defect
    (uncaptioned, as the one confusing crop in a real dataset), in kohya's `<repeats>_toyworld` layout."""

    count: int
    seed: int
    colours: tuple[str, ...] = KNOWN_COLOURS
    scenes: tuple[Scene, ...] | None = None
    look: Look = LOOK_V1
    defects: tuple[int, ...] = ()
    repeats: int = 1
    backgrounds: dict[str, tuple[int, int, int]] | None = None

    def pictures(self) -> list[tuple[Scene, Detail]]:
        rng = random.Random(f"draw:{self.seed}")
        scenes = cycle_scenes(list(self.scenes), self.count, self.seed) if self.scenes else \
            sample_scenes(self.count, self.seed, self.colours)
        out = []
        for index, scene in enumerate(scenes):
            detail = random_detail(scene, rng, self.look)
            out.append((scene, replace(detail, defect=True) if index in self.defects else detail))
        return out


def write_spec(folder: Path, spec: DatasetSpec) -> Path:
    """Write `spec` under `folder/<repeats>_toyworld` (PNGs with same-named `.txt` captions); returns `folder`."""
    target = Path(folder) / f"{spec.repeats}_toyworld"
    target.mkdir(parents=True, exist_ok=True)
    for index, (scene, detail) in enumerate(spec.pictures()):
        stem = target / f"{index:05d}"
        render(scene, detail, backgrounds=spec.backgrounds).save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(scene.caption + "\n", encoding="utf-8")
    return Path(folder)


def write_dataset(folder: Path, count: int, seed: int, colours=KNOWN_COLOURS, repeats: int = 1,
                  backgrounds: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """A kohya-layout folder `folder/<repeats>_toyworld` of plain scenes of `colours` (see `DatasetSpec`)."""
    return write_spec(folder, DatasetSpec(count, seed, tuple(colours), repeats=repeats, backgrounds=backgrounds))
