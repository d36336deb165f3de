"""The toy world's oracle: reads a picture's scene and its uncaptioned detail back from pixels.

`perceive` finds the background (the border's median colour), the marker (the largest blob of a marker
colour) and the object (the largest connected blob of the rest that differs from the background; a blob
that is not one or two shades of one colour, as noise or speckle, is no object). Of the object it reads:
- colour: the nearest palette colour of the median pixel of its upper half;
- shape: how much of its bounding box the object fills once its holes are filled (square ~1, circle ~0.79,
  triangle ~0.5); position: the nearest anchor to the box's centre; size: the half size the shape implies;
- style: `shaded` when its lower part is the darker shade of its colour;
- the character's marking (a blue band down the middle of a yellow circle);
- the planted defect: a hole of background inside the object.

`judge` compares that with a caption: each attribute it names scores 1 when it matches, and `score` is their
mean, so a blank or wrong image scores low. `same_picture` tells whether two pictures are one (same scene and
same detail, within the VAE's round-trip error): how the oracle finds a copy of a training image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .world import (BACKGROUNDS, CHARACTER, CHARACTER_COLOUR, CHARACTER_MARKING, CHARACTER_SHAPE, COLOURS, MARKERS,
                    POSITION_PHRASES, POSITIONS, SHADE, SHAPES, STYLE_WORD, Scene)

ATTRIBUTES = ("colour", "shape", "position", "background")
MIN_OBJECT_FRACTION = 0.02  # of the image: anything smaller is no object at all
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as foreground
OBJECT_SPREAD = 70.0  # RGB distance from the object's colour (or its shade, or the marking) that is the object
MIN_COHERENT_SHARE = 0.6  # of the object's interior that must be its colour, its shade or the marking
MAX_COLOUR_DISTANCE = 90.0  # from the nearest palette colour; farther is no named colour
SQUARE_FILL, TRIANGLE_FILL = 0.9, 0.64  # fill ratio above -> square; below -> triangle; between -> circle
MARKER_DISTANCE = 50.0  # RGB distance from a marker colour that is marker
MIN_MARKER_FRACTION = 0.004  # of the image (16 pixels at 64x64)
MIN_HOLE_SHARE = 0.06  # of the filled object: a hole this large is the defect
BAND_SHARE = 0.5  # of the object's central column that must be the marking colour for the character
# Two pictures are one when every reading is this close (fractions of the image side).
SAME_CENTRE, SAME_HALF, SAME_MARKER = 0.04, 0.025, 0.05
SHAPE_EXTENT = {"circle": 1.0, "square": 0.89, "triangle": 1.25}  # half width over half size (see world)


@dataclass(frozen=True)
class Perception:
    """What the oracle sees; an object attribute is None when the image shows no object."""

    colour: str | None
    shape: str | None
    position: str | None
    background: str
    fill: float = 0.0
    style: str | None = None
    character: bool = False
    defect: bool = False
    centre: tuple[float, float] | None = None  # of the object's box, as fractions of the image side
    half: float | None = None  # the shape's half size, as a fraction of the image side
    marker: tuple[float, float, str] | None = None  # centre and colour of the marker

    @property
    def scene_key(self) -> tuple:
        return (self.colour, self.shape, self.position, self.background, self.style, self.character)


@dataclass(frozen=True)
class Judgement:
    matches: dict[str, bool]

    @property
    def score(self) -> float:
        return sum(self.matches.values()) / len(self.matches)

    @property
    def correct(self) -> bool:
        return all(self.matches.values())


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(rgb - np.array(palette[n], dtype=np.float64)) for n in names]
    return names[int(np.argmin(distances))]


def _near(pixels: np.ndarray, rgb, distance: float) -> np.ndarray:
    return np.linalg.norm(pixels - np.asarray(rgb, dtype=np.float64), axis=-1) < distance


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if not count:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def _main_colour(pixels: np.ndarray) -> np.ndarray:
    """The median of the pixels nearest the palette colour most of them are nearest to (a marked or shaded
    object is two or more colours, and a per-channel median of them all would be none)."""
    palette = np.array(list(COLOURS.values()), dtype=np.float64)
    nearest = np.argmin(np.linalg.norm(pixels[:, None] - palette[None], axis=2), axis=1)
    return np.median(pixels[nearest == np.bincount(nearest).argmax()], axis=0)


def _marker(pixels: np.ndarray, side: int) -> tuple[tuple[float, float, str] | None, np.ndarray]:
    """The marker's reading and its pixels (dilated by one, to take its blended edge off the object)."""
    best, best_mask = None, np.zeros(pixels.shape[:2], dtype=bool)
    for name, rgb in MARKERS.items():
        blob = _largest(_near(pixels, rgb, MARKER_DISTANCE))
        if blob.sum() >= MIN_MARKER_FRACTION * side * side and blob.sum() > best_mask.sum():
            rows, cols = np.nonzero(blob)
            best, best_mask = ((cols.mean() + 0.5) / side, (rows.mean() + 0.5) / side, name), blob
    return best, ndimage.binary_dilation(best_mask) if best else best_mask


def perceive(image: Image.Image) -> Perception:
    """Read the scene and its detail back from a square RGB image of any size."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    height, width, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, BACKGROUNDS)
    marker, marker_mask = _marker(pixels, width)
    foreground = (np.linalg.norm(pixels - background_rgb, axis=2) > FOREGROUND_DISTANCE) & ~marker_mask
    # Closed first: where two object colours meet, their blend can be as near the background as gray is.
    blob = _largest(ndimage.binary_closing(foreground) | foreground)
    if blob.sum() < MIN_OBJECT_FRACTION * height * width:
        return Perception(None, None, None, background, marker=marker)
    rows, cols = np.nonzero(blob)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    upper = blob.copy()
    upper[(top + bottom) // 2:] = False
    colour_rgb = _main_colour(pixels[upper if upper.any() else blob])
    marking = np.asarray(COLOURS[CHARACTER_MARKING], dtype=np.float64)
    tones = [colour_rgb, marking, colour_rgb * SHADE, marking * SHADE]
    interior = ndimage.binary_erosion(blob)  # its anti-aliased edge is a blend with the background: not judged
    interior = interior if interior.sum() >= 10 else blob
    coherent = interior & np.logical_or.reduce([_near(pixels, tone, OBJECT_SPREAD) for tone in tones])
    if coherent.sum() < MIN_COHERENT_SHARE * interior.sum():
        return Perception(None, None, None, background, marker=marker)  # speckle or noise, not one object
    filled = ndimage.binary_fill_holes(blob)
    fill = filled.sum() / ((bottom - top) * (right - left))
    shape = "square" if fill > SQUARE_FILL else "triangle" if fill < TRIANGLE_FILL else "circle"
    colour = _nearest(colour_rgb, COLOURS)
    if np.linalg.norm(colour_rgb - np.array(COLOURS[colour], dtype=np.float64)) > MAX_COLOUR_DISTANCE:
        colour = None  # a colour of no name in this world
    centre = ((left + right) / 2 / width, (top + bottom) / 2 / height)
    position = min(POSITIONS, key=lambda p: np.linalg.norm(np.array(centre) - np.array(POSITIONS[p])))
    lower = blob.copy()
    lower[: bottom - max(1, (bottom - top) * 3 // 10)] = False
    nearest_tone = np.argmin([np.linalg.norm(pixels[lower] - tone, axis=1) for tone in tones], axis=0)
    shaded = (nearest_tone >= 2).sum() > (nearest_tone < 2).sum()
    middle = (left + right) / 2
    column = upper.copy()
    column[:, : int(middle - 0.1 * (right - left))] = False
    column[:, int(np.ceil(middle + 0.1 * (right - left))):] = False
    band = column.any() and _near(pixels[column], marking, OBJECT_SPREAD).mean() > BAND_SHARE
    return Perception(
        colour, shape, position, background, float(fill),
        style="shaded" if shaded else "plain",
        character=bool(band and (colour, shape) == (CHARACTER_COLOUR, CHARACTER_SHAPE)),
        defect=bool((filled & ~blob).sum() >= MIN_HOLE_SHARE * filled.sum()),
        centre=centre, half=(right - left - 1) / 2 / width / SHAPE_EXTENT[shape], marker=marker,
    )


def same_picture(a: Perception, b: Perception) -> bool:
    """Whether `a` and `b` read as one picture: the same scene, object place and size, and marker."""
    if a.shape is None or b.shape is None or a.scene_key != b.scene_key:
        return False
    if np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) > SAME_CENTRE or abs(a.half - b.half) > SAME_HALF:
        return False
    if (a.marker is None) != (b.marker is None):
        return False
    return a.marker is None or (a.marker[2] == b.marker[2] and
                                np.hypot(a.marker[0] - b.marker[0], a.marker[1] - b.marker[1]) <= SAME_MARKER)


def reproduced(image: Image.Image, training: list[Perception]) -> int | None:
    """The index of the training picture `image` is a copy of, if any (the first, if several)."""
    seen = perceive(image)
    return next((i for i, t in enumerate(training) if same_picture(seen, t)), None)


_CAPTION = re.compile(
    r"\b(?P<colour>{})\s+(?P<shape>{})\b".format("|".join(COLOURS), "|".join(SHAPES))
)
_PHRASE_TO_POSITION = {phrase: name for name, phrase in POSITION_PHRASES.items()}
_BACKGROUND = re.compile(r"\b(?P<background>{})\s+background\b".format("|".join(BACKGROUNDS)))


def parse_caption(text: str) -> dict[str, str | bool]:
    """The attributes a caption asks for (any subset of colour, shape, position, background, style, and
    `character` for the character, whose colour and shape are its own)."""
    wanted: dict[str, str | bool] = {}
    lowered = text.lower()
    if re.search(rf"\b{CHARACTER}\b", lowered):
        wanted["character"] = True
    elif match := _CAPTION.search(lowered):
        wanted.update(colour=match["colour"], shape=match["shape"])
    else:
        wanted.update({k: w for k, words in (("colour", COLOURS), ("shape", SHAPES))
                       for w in words if re.search(rf"\b{w}\b", lowered)})
    for phrase, position in _PHRASE_TO_POSITION.items():
        if phrase in lowered:
            wanted["position"] = position
    if match := _BACKGROUND.search(lowered):
        wanted["background"] = match["background"]
    if re.search(rf"\b{STYLE_WORD}\b", lowered):
        wanted["style"] = "shaded"
    return wanted


def judge(image: Image.Image, caption: str) -> Judgement:
    """How well `image` shows what `caption` asks for, attribute by attribute."""
    wanted = parse_caption(caption)
    if not wanted:
        raise ValueError(f"caption {caption!r} names no toy-world attribute")
    seen = perceive(image)
    return Judgement({name: getattr(seen, name) == value for name, value in wanted.items()})


def judge_scene(image: Image.Image, scene: Scene) -> Judgement:
    return judge(image, scene.caption)
