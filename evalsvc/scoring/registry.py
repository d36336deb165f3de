"""What a scorer is, what it is given, and the registry of them.

A scorer is shaped like a torchmetrics metric: it declares `higher_is_better`, a `version` (bumped
when its numbers change, so stored values are recomputed), whether it needs a CLIP backbone and the
reference images, and the weights it needs. Image-level scorers give one value per sampled image;
set-level ones one value per (checkpoint, setting[, prompt]) group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from .backbone import BackboneSpec, ClipBackbone
from ..setting import Setting
from .cells import ScoredCell


@dataclass(frozen=True)
class ScoreRow:
    """One image's value of one metric."""

    key: str
    value: float
    details: dict | None = None


@dataclass(frozen=True)
class SetScoreRow:
    """One group's value: a checkpoint at a setting, over all prompts (`prompt_id` "") or one prompt."""

    checkpoint: str
    setting: Setting
    prompt_id: str
    value: float
    n: int
    std: float | None = None
    details: dict | None = None


@dataclass(frozen=True)
class PreferenceWeights:
    """Local weights of the optional preference scorers (see `preference`)."""

    aesthetic: Path | None = None  # the LAION aesthetic v2 head: .safetensors (or .pth with allow_pickle)
    pickscore: Path | None = None  # a folder with the PickScore CLIPModel (default: the Hugging Face cache)
    allow_pickle: bool = False


@dataclass(frozen=True)
class ScoreConfig:
    """What `evalsvc score` computes and with which weights."""

    metrics: tuple[str, ...] | None = None  # None: every registered scorer
    # None: the run's last setting (see `run_settings`); the backbone then defaults to BackboneSpec()
    backbone: BackboneSpec | None = None
    reference: Path | None = None  # the training images (clip_i, nearest_train, kid, fid)
    trigger: str | None = None  # removed from prompts for clip_t_untriggered
    preference: PreferenceWeights = field(default_factory=PreferenceWeights)
    device: str = "cpu"
    batch_size: int = 64
    progress: bool = True


class ScoringContext:
    """The run's cells and lazily loaded shared inputs (backbone, reference embeddings)."""

    def __init__(self, store, run: str, cells: list[ScoredCell], config: ScoreConfig):
        self.store, self.run, self.cells, self.config = store, run, cells, config

    @property
    def backbone_id(self) -> str:
        return self.config.backbone.id

    @cached_property
    def backbone(self) -> ClipBackbone:
        return ClipBackbone(self.config.backbone, self.config.device)

    def image_embeddings(self, cells: list[ScoredCell]) -> dict[str, np.ndarray]:
        from .embeddings import image_embeddings

        return image_embeddings(self.store, self.backbone, {c.image_sha256: c.image_path for c in cells},
                                self.config.batch_size, self.config.progress)

    @cached_property
    def reference_files(self) -> dict[str, Path]:
        from .reference import reference_images

        return reference_images(self.config.reference)

    @cached_property
    def reference_id(self) -> str:
        """Names the reference set in stored versions: values against other training images are recomputed."""
        import hashlib

        return hashlib.sha256("\n".join(sorted(self.reference_files)).encode()).hexdigest()[:12]

    @cached_property
    def reference_embeddings(self) -> tuple[list[Path], np.ndarray]:
        from .embeddings import image_embeddings

        files = self.reference_files
        vectors = image_embeddings(self.store, self.backbone, files, self.config.batch_size, self.config.progress)
        return list(files.values()), np.stack([vectors[sha] for sha in files])

    def base_cells(self) -> dict[tuple[str, int, Setting], ScoredCell]:
        """The base model's cell for each (prompt, seed, setting)."""
        return {(c.prompt_id, c.seed, c.setting): c for c in self.cells if c.is_base}


class Scorer:
    name: ClassVar[str]
    version: ClassVar[str]
    higher_is_better: ClassVar[bool]
    level: ClassVar[str] = "image"  # or "set"
    needs_backbone: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    weights: ClassVar[str] = "none"
    description: ClassVar[str] = ""

    def stored_version(self, ctx: ScoringContext) -> str:
        """The version stored with each value: the scorer's, and the backbone's for CLIP-based scorers, so
        that values from another backbone (or other reference images) are recomputed rather than mixed."""
        version = f"{self.version}@{ctx.backbone_id}" if self.needs_backbone else self.version
        return f"{version}#{ctx.reference_id}" if self.needs_reference else version

    def skip_reason(self, ctx: ScoringContext) -> str | None:
        """Why this scorer cannot run on this run (one line), or None."""
        if self.needs_reference and ctx.config.reference is None:
            return f"{self.name} skipped: it needs the training images (--reference DIR)"
        return None

    def compute(self, ctx: ScoringContext, cells: list[ScoredCell]) -> list:
        raise NotImplementedError


def scorer_registry() -> dict[str, type[Scorer]]:
    """Every scorer by name, in the order `evalsvc score` runs them."""
    from .base_relative import Drift, DriftClip, Overcook
    from .clip_scores import ClipI, ClipT, ClipTUntriggered, Identity, Memorised, NearestTrain
    from .oracle_scorer import OracleScorer
    from .preference import Aesthetic, PickScore
    from .set_scorers import Diversity, DiversitySsim, Fid, Kid

    scorers = (ClipT, ClipTUntriggered, ClipI, Identity, NearestTrain, Memorised, Diversity, DiversitySsim, Kid, Fid,
               Drift, DriftClip, Overcook, OracleScorer, Aesthetic, PickScore)
    return {scorer.name: scorer for scorer in scorers}
