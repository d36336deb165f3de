"""A training folder's own captions as a suite: the memorisation probe.

Extraction studies of diffusion models (Carlini et al. 2023, Somepalli et al. 2023) prompt a model with
its training captions and look for near-copies of the training images; `evalsvc sample --suite FOLDER`
then `evalsvc score --reference FOLDER` is that test, with the `nearest_train` and `memorised` scorers.

The folder is read by the trainer's kohya rules (`trainer.dataset.scan_folder`): same-named `.txt`
captions, `N_name` subfolders whose name captions their uncaptioned images. Each distinct caption is
one prompt (role `reference`, so the primary metric, judged on `target` prompts, is not changed by
it); a folder with more than `MAX_PROMPTS` distinct captions gives an evenly spaced `MAX_PROMPTS` of
them in sorted order, so the same folder always gives the same suite.
"""

from __future__ import annotations

from pathlib import Path

from evalsvc.errors import InputError, SuiteError
from evalsvc.suites.model import Suite, make_prompt

MAX_PROMPTS = 64


def suite_from_training_folder(folder: str | Path, max_prompts: int = MAX_PROMPTS) -> Suite:
    """The suite of `folder`'s distinct captions; its `notes` say what was left out or guessed."""
    from trainer.dataset import scan_folder  # imports torch: only when a folder is given

    folder = Path(folder)
    try:
        scan = scan_folder(folder)
    except InputError as error:
        raise SuiteError(f"{folder}: {error}") from None
    captions = sorted({r.caption.strip() for r in scan.records if r.caption.strip()})
    notes = list(scan.notes)
    if not captions:
        raise SuiteError(f"{folder}: no captioned images to take prompts from "
                         f"({scan.counts.images} usable image(s), none with a non-empty caption)")
    if len(captions) > max_prompts:
        step = len(captions) / max_prompts
        chosen = [captions[int(i * step)] for i in range(max_prompts)]
        notes.append(f"{len(captions)} distinct captions: probing an evenly spaced {max_prompts} of them")
        captions = chosen
    prompts = tuple(make_prompt(f"{folder}: caption {i}", id=f"caption-{i:03d}", text=text, role="reference",
                                tags=("training-caption",))
                    for i, text in enumerate(captions))
    description = (f"the captions of the training images in {folder} "
                   f"({scan.counts.images} image(s)): the memorisation probe")
    return Suite(name=f"captions-{folder.resolve().name}", prompts=prompts, source=str(folder),
                 description=description, notes=tuple(notes))
