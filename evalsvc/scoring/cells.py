"""The sampled images of a run, with what each shows: checkpoint, prompt, seed and setting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..setting import Setting


@dataclass(frozen=True)
class ScoredCell:
    """One sampled grid cell of a run at one setting (`key` is the engine's work key; an image that belongs
    to several settings, such as the base model's at every LoRA strength, is one cell per setting)."""

    key: str
    checkpoint: str  # sha256
    file_name: str
    checkpoint_role: str  # "base" or "candidate"
    epoch: int | None
    ema: bool
    prompt_id: str
    prompt: str
    prompt_role: str  # "target" or "holdout"
    tags: tuple[str, ...]
    seed: int
    setting: Setting
    cfg: float  # the cell's own CFG (the setting's, or its prompt's when the setting's is per prompt)
    image_path: Path
    image_sha256: str

    @property
    def is_base(self) -> bool:
        return self.checkpoint_role == "base"


def run_cells(store, run: str) -> list[ScoredCell]:
    """Every sampled cell of `run`, in a stable order (checkpoint, prompt, seed, CFG)."""
    rows = store.db.execute(
        "SELECT g.key, c.sha256, c.file_name, rc.role, c.epoch, c.ema, g.prompt_id, w.prompt, p.role, p.tags, "
        "w.seed, g.setting, w.cfg, s.image_path, s.image_sha256 "
        "FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint "
        "JOIN run_checkpoints rc ON rc.sha256 = c.sha256 AND rc.run = g.run "
        "JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id "
        "WHERE g.run = ? ORDER BY c.file_name, p.position, w.seed, g.setting", [run]).fetchall()
    images = store.layout.images
    settings: dict[str, Setting] = {}
    return [ScoredCell(key, sha, file_name, role, epoch, bool(ema), prompt_id, prompt, prompt_role,
                       tuple(tags or ()), int(seed), settings.setdefault(setting, Setting.from_key(setting)),
                       float(cfg), images / image_path, image_sha)
            for key, sha, file_name, role, epoch, ema, prompt_id, prompt, prompt_role, tags, seed, setting, cfg,
            image_path, image_sha in rows]


def cell_pixels(cells) -> np.ndarray:
    """The cells' images as one (N, H, W, 3) uint8 array."""
    arrays = []
    for cell in cells:
        with Image.open(cell.image_path) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    return np.stack(arrays)
