"""The subject of an image, cut out: what a character's likeness is judged on.

On a plain background (the image's border one colour, as in product shots, character sheets and the toy
world) the largest blob that differs from the background is the subject; `subject_view` centres it, square,
on neutral gray, with everything else (background, small props) painted over. Its position, size and
background then count for little in an embedding, and its identity for much. On a busy background the
whole image is the subject.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

NEUTRAL = (128, 128, 128)
PLAIN_BORDER = 20.0  # mean RGB distance of the border from its median: below it, the background is plain
FOREGROUND = 40.0  # RGB distance from the background that is the subject
MIN_SUBJECT = 0.01  # of the image: smaller is no subject
PADDING = 1.25  # the square crop's side over the subject's longer side


def subject_view(image: Image.Image) -> Image.Image:
    """The image's subject centred on neutral gray, at the image's size (the image itself when its
    background is not plain or it shows no subject)."""
    from scipy import ndimage

    rgb = image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.float64)
    height, width, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    if np.linalg.norm(border - background, axis=1).mean() > PLAIN_BORDER:
        return rgb
    labels, count = ndimage.label(np.linalg.norm(pixels - background, axis=2) > FOREGROUND)
    if not count:
        return rgb
    sizes = ndimage.sum(labels > 0, labels, range(1, count + 1))
    blob = labels == int(np.argmax(sizes)) + 1
    if blob.sum() < MIN_SUBJECT * height * width:
        return rgb
    rows, cols = np.nonzero(blob)
    cy, cx = (rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2
    half = max(rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()) * PADDING / 2
    painted = np.where(blob[..., None], pixels, np.array(NEUTRAL, dtype=np.float64)).astype(np.uint8)
    canvas = Image.new("RGB", (int(np.ceil(2 * half)),) * 2, NEUTRAL)
    canvas.paste(Image.fromarray(painted), (int(round(half - cx)), int(round(half - cy))))
    return canvas.resize((width, height), Image.Resampling.BICUBIC)
