"""The toy world's oracle: reads colour, shape, position and background back from pixels.

`perceive` finds the background (the border's median colour), segments what differs from it
(noise or speckle that is not one flat colour is no object), and reads the object's colour (nearest palette colour of the median pixel), position (nearest
anchor to the bounding-box centre) and shape (how much of its bounding box the object fills:
square ~1, circle ~0.79, triangle ~0.5). `judge` compares that with a caption: each attribute
scores 1 when it matches, and `score` is their mean, so a blank or wrong image scores low.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, Scene

ATTRIBUTES = ("colour", "shape", "position", "background")
MIN_OBJECT_FRACTION = 0.02  # of the image: anything smaller is no object at all
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as foreground
OBJECT_SPREAD = 70.0  # RGB distance from the object's median colour that still counts as the object
MIN_COHERENT_SHARE = 0.6  # of the foreground that must be one colour for it to be an object
MAX_COLOUR_DISTANCE = 90.0  # from the nearest palette colour; farther is no named colour
SQUARE_FILL, TRIANGLE_FILL = 0.9, 0.64  # fill ratio above -> square; below -> triangle; between -> circle


@dataclass(frozen=True)
class Perception:
    """What the oracle sees; an attribute is None when the image shows no object."""

    colour: str | None
    shape: str | None
    position: str | None
    background: str
    fill: float = 0.0


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


def perceive(image: Image.Image) -> Perception:
    """Read the scene back from an RGB image of any size."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    height, width, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    background = _nearest(background_rgb, BACKGROUNDS)
    mask = np.linalg.norm(pixels - background_rgb, axis=2) > FOREGROUND_DISTANCE
    if mask.sum() < MIN_OBJECT_FRACTION * height * width:
        return Perception(None, None, None, background)
    median = np.median(pixels[mask], axis=0)
    coherent = mask & (np.linalg.norm(pixels - median, axis=2) < OBJECT_SPREAD)
    if coherent.sum() < MIN_COHERENT_SHARE * mask.sum():
        return Perception(None, None, None, background)  # speckle or noise, not one flat-coloured object
    mask = coherent
    colour = _nearest(median, COLOURS)
    if np.linalg.norm(median - np.array(COLOURS[colour], dtype=np.float64)) > MAX_COLOUR_DISTANCE:
        colour = None  # a colour of no name in this world
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    fill = mask.sum() / ((bottom - top) * (right - left))
    shape = "square" if fill > SQUARE_FILL else "triangle" if fill < TRIANGLE_FILL else "circle"
    centre = np.array([(left + right) / 2 / width, (top + bottom) / 2 / height])
    position = min(POSITIONS, key=lambda p: np.linalg.norm(centre - np.array(POSITIONS[p])))
    return Perception(colour, shape, position, background, float(fill))


_CAPTION = re.compile(
    r"\b(?P<colour>{})\s+(?P<shape>{})\b".format("|".join(COLOURS), "|".join(SHAPES))
)
_PHRASE_TO_POSITION = {phrase: name for name, phrase in POSITION_PHRASES.items()}
_BACKGROUND = re.compile(r"\b(?P<background>{})\s+background\b".format("|".join(BACKGROUNDS)))


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption asks for (any subset of colour, shape, position, background)."""
    wanted: dict[str, str] = {}
    lowered = text.lower()
    if match := _CAPTION.search(lowered):
        wanted.update(colour=match["colour"], shape=match["shape"])
    else:
        wanted.update({k: w for k, words in (("colour", COLOURS), ("shape", SHAPES))
                       for w in words if re.search(rf"\b{w}\b", lowered)})
    for phrase, position in _PHRASE_TO_POSITION.items():
        if phrase in lowered:
            wanted["position"] = position
    if match := _BACKGROUND.search(lowered):
        wanted["background"] = match["background"]
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
