"""Dataset audit: the training images an image or a checkpoint's outputs come back to.

For one image, its nearest training images (cosine of CLIP image embeddings). For a checkpoint, the training
images that are the nearest one of its outputs more often than of the base's outputs on the same prompts, seeds
and settings: the images a LoRA learned too well, such as one defective picture whose defect it reproduces.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .backbone import BackboneSpec, MissingWeights
from .cells import ScoredCell, run_cells
from .reference import ReferenceCache
from .registry import ScoreConfig, ScoringContext
from .run_settings import settle


@dataclass(frozen=True)
class AuditConfig:
    checkpoint: str | None = None  # a candidate's file name; None: every candidate
    image: str | None = None  # a cell key or an image file of the run: its nearest training images
    top: int = 3
    scoring: ScoreConfig = field(default_factory=ScoreConfig)  # backbone and reference (default: the run's last)


@dataclass(frozen=True)
class Neighbour:
    file: Path
    similarity: float


@dataclass(frozen=True)
class Attraction:
    """A training image that is the nearest one of `count` of the checkpoint's images and `base_count` of the
    base's on the same cells; `similarity` is the mean cosine of those images of the checkpoint with it."""

    file: Path
    count: int
    images: int
    base_count: int
    base_images: int
    similarity: float

    @property
    def share(self) -> float:
        return self.count / self.images

    @property
    def base_share(self) -> float:
        return self.base_count / self.base_images if self.base_images else 0.0

    @property
    def lift(self) -> float:
        """How much more often than the base's outputs the checkpoint's come back to this image."""
        return self.share - self.base_share


@dataclass(frozen=True)
class CheckpointAudit:
    file_name: str
    images: int
    base_images: int
    attractions: tuple[Attraction, ...]  # the most over-represented first; only those above the base's share


@dataclass(frozen=True)
class ImageAudit:
    key: str
    file_name: str
    prompt: str
    seed: int
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class Audit:
    run: str
    references: int
    checkpoints: tuple[CheckpointAudit, ...]
    image: ImageAudit | None
    settings_line: str | None = None


def audit_run(store, run: str, config: AuditConfig = AuditConfig()) -> Audit:
    """The audit of `run`'s candidates (or of `config.checkpoint`) and of `config.image` when given."""
    if store.db.execute("SELECT count(*) FROM runs WHERE name = ?", [run]).fetchone()[0] == 0:
        raise InputError(f"no run named {run!r} in the store")
    if config.top < 1:
        raise InputError(f"--top must be at least 1, got {config.top}")
    scoring, settings_line = settle(store.db, run, config.scoring)
    cells = run_cells(store, run)
    ctx = ScoringContext(store, run, cells, scoring)
    files, reference = ctx.reference_embeddings
    image = _image_audit(ctx, cells, config, files, reference) if config.image else None
    candidates = sorted({c.file_name for c in cells if not c.is_base})
    if config.checkpoint is not None:
        if config.checkpoint not in candidates:
            raise InputError(f"run {run!r} has no sampled candidate {config.checkpoint!r} (it has: "
                             f"{', '.join(candidates) or 'none'})")
        candidates = [config.checkpoint]
    elif image is not None:
        candidates = []
    bases = ctx.base_cells()
    audited = [c for c in cells if c.file_name in candidates and not c.is_base]
    paired = {name: [bases[k] for c in audited if c.file_name == name
                     and (k := (c.prompt_id, c.seed, c.setting)) in bases] for name in candidates}
    vectors = ctx.image_embeddings(audited + [c for group in paired.values() for c in group])
    audits = tuple(_checkpoint_audit(name, [c for c in audited if c.file_name == name], paired[name], vectors, files,
                                     reference, config.top) for name in candidates)
    return Audit(run, len(files), audits, image, settings_line)


class TrainingNeighbours:
    """An image's nearest training images from the embeddings the store already holds, for the app's enlarged
    image: against the reference folder and backbone of the run's last scoring, with no backbone loaded, and with
    each folder's hashes and each weight file's hash kept between requests (a CLIP-L file is 1.7 GB)."""

    def __init__(self):
        self._references = ReferenceCache()
        self._backbones: dict[BackboneSpec, BackboneSpec] = {}  # the first of equal specs keeps its hashed id

    def of(self, db, run: str, image_sha256: str, top: int = 3) -> tuple[tuple[Neighbour, ...], str]:
        """The neighbours, or ((), a line saying why they cannot be told)."""
        from .embeddings import cached_embeddings_in
        from .run_settings import stored_settings

        settings = stored_settings(db, run) or {}
        folder, backbone = settings.get("reference"), settings.get("backbone")
        if folder is None or backbone is None:
            return (), "nearest training images: score the run with --reference DIR (its training images) to see them"
        try:
            files = self._references.images(folder)
            backbone_id = self._backbones.setdefault(backbone, backbone).id
        except (InputError, MissingWeights) as exc:
            return (), f"nearest training images: {exc}"
        vectors = cached_embeddings_in(db, backbone_id, [image_sha256, *files])
        if image_sha256 not in vectors or any(sha not in vectors for sha in files):
            return (), ("nearest training images: not all embedded yet; score the run with nearest_train or clip_i "
                        f"against {folder}")
        reference = np.stack([vectors[sha] for sha in files])
        return nearest(vectors[image_sha256], list(files.values()), reference, top), ""


def nearest(vector: np.ndarray, files: list[Path], reference: np.ndarray, top: int) -> tuple[Neighbour, ...]:
    similarities = reference @ vector
    order = np.argsort(-similarities, kind="stable")[:top]
    return tuple(Neighbour(files[i], float(similarities[i])) for i in order)


def _image_audit(ctx, cells: list[ScoredCell], config: AuditConfig, files, reference) -> ImageAudit:
    wanted = config.image
    found = next((c for c in cells if c.key == wanted or str(c.image_path) == wanted
                  or c.image_path.name == Path(wanted).name), None)
    if found is None:
        raise InputError(f"--image {wanted}: not a cell key or image file of run {ctx.run!r}")
    vector = ctx.image_embeddings([found])[found.image_sha256]
    return ImageAudit(found.key, found.file_name, found.prompt, found.seed, nearest(vector, files, reference,
                                                                                    config.top))


def _checkpoint_audit(name: str, own: list[ScoredCell], paired: list[ScoredCell], vectors, files, reference,
                      top: int) -> CheckpointAudit:
    """`own`: the checkpoint's cells; `paired`: the base's cells at the same prompts, seeds and settings."""
    base_images = list({c.image_sha256: c for c in paired}.values())
    ranked = over_represented(np.stack([vectors[c.image_sha256] for c in own]),
                              np.stack([vectors[c.image_sha256] for c in base_images]) if base_images else None,
                              files, reference)
    return CheckpointAudit(name, len(own), len(base_images), ranked[:top])


def over_represented(own: np.ndarray, base: np.ndarray | None, files: list[Path],
                     reference: np.ndarray) -> tuple[Attraction, ...]:
    """The training images (rows of `reference`) that are the nearest one of a larger share of `own` (image
    embeddings, one per row) than of `base`, the most over-represented first."""
    own_nearest = np.argmax(own @ reference.T, axis=1)
    base_nearest = Counter(np.argmax(base @ reference.T, axis=1).tolist()) if base is not None else Counter()
    counts = Counter(own_nearest.tolist())
    attractions = [Attraction(files[i], n, len(own), base_nearest.get(i, 0), 0 if base is None else len(base),
                              float(np.mean(own[own_nearest == i] @ reference[i]))) for i, n in counts.items()]
    return tuple(sorted((a for a in attractions if a.lift > 0), key=lambda a: (-a.lift, -a.count, str(a.file))))


def audit_lines(audit: Audit, root: Path | None = None) -> list[str]:
    """The audit as the lines `evalsvc audit` prints (files relative to `root` when under it)."""
    def shown(path: Path) -> str:
        if root is not None and path.is_relative_to(root):
            return str(path.relative_to(root))
        return str(path)

    lines = [audit.settings_line] if audit.settings_line else []
    if audit.image is not None:
        i = audit.image
        lines.append(f"image {i.key} ({i.file_name}, seed {i.seed}, {i.prompt!r}): nearest of {audit.references} "
                     "training images:")
        lines += [f"  {n}. {shown(x.file)}  similarity {x.similarity:.3f}" for n, x in enumerate(i.neighbours, 1)]
    for c in audit.checkpoints:
        if not c.attractions:
            lines.append(f"{c.file_name}: {c.images} images; no training image is the nearest one of its images more "
                         f"often than of the base's ({c.base_images} images)")
            continue
        lines.append(f"{c.file_name}: {c.images} images; the training images they come back to more often than the "
                     f"base's {c.base_images} do:")
        lines += [f"  {n}. {shown(a.file)}  nearest for {a.count} of {a.images} ({a.share:.0%}; base {a.base_count} "
                  f"of {a.base_images}, {a.base_share:.0%}), mean similarity {a.similarity:.3f}"
                  for n, a in enumerate(c.attractions, 1)]
    return lines


def audit_json(audit: Audit) -> dict:
    return {"run": audit.run, "references": audit.references,
            "image": None if audit.image is None else {
                "key": audit.image.key, "checkpoint": audit.image.file_name, "prompt": audit.image.prompt,
                "seed": audit.image.seed,
                "nearest": [{"file": str(n.file), "similarity": n.similarity} for n in audit.image.neighbours]},
            "checkpoints": [{"checkpoint": c.file_name, "images": c.images, "base_images": c.base_images,
                             "over_represented": [{"file": str(a.file), "count": a.count, "share": a.share,
                                                   "base_count": a.base_count, "base_share": a.base_share,
                                                   "lift": a.lift, "similarity": a.similarity}
                                                  for a in c.attractions]} for c in audit.checkpoints]}
