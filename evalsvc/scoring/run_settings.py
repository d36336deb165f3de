"""The settings a run was last scored with: CLIP backbone, reference images and trigger word.

A later scoring of the run (`evalsvc score` without those options, the scoring that follows `sample
--score`, `watch` or `train`, a score job queued in the app) takes each one it is not given from here,
so every checkpoint of a run is compared with the same training images by the same backbone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .backbone import BackboneSpec
from .registry import ScoreConfig


def stored_settings(db, run: str) -> dict | None:
    row = db.execute("SELECT backbone_model, backbone_weights, reference, trigger FROM run_scoring WHERE run = ?",
                     [run]).fetchone()
    if row is None:
        return None
    model, weights, reference, trigger = row
    return {"backbone": _backbone(model, weights), "reference": Path(reference) if reference else None,
            "trigger": trigger}


def _backbone(model: str, weights: str) -> BackboneSpec:
    from ..toy.clip import TOY_CLIP_NAME

    # the toy CLIP's weights lie in the installed package, wherever that is now
    return BackboneSpec.toy() if model == TOY_CLIP_NAME else BackboneSpec(model, weights)


def settle(db, run: str, config: ScoreConfig) -> tuple[ScoreConfig, str | None]:
    """`config` with each setting it leaves unset (None) taken from the run's last scoring, else the defaults;
    and a line naming what was taken, when anything was."""
    stored = stored_settings(db, run) or {}
    taken = {name: stored[name] for name in ("backbone", "reference", "trigger")
             if getattr(config, name) is None and stored.get(name) is not None}
    if "reference" in taken and not taken["reference"].is_dir():
        raise InputError(f"run {run!r} was last scored against the reference images in {taken['reference']}, which "
                         "is no longer a folder; pass --reference DIR")
    settled = replace(config, **taken)
    if settled.backbone is None:
        settled = replace(settled, backbone=BackboneSpec())
    if not taken:
        return settled, None
    said = ", ".join(f"{name} {_shown(value)}" for name, value in taken.items())
    return settled, f"run {run!r}: scoring with its last settings: {said}"


def _shown(value) -> str:
    if isinstance(value, BackboneSpec):
        return value.model if value.is_file else f"{value.model}:{value.pretrained}"
    return repr(value) if isinstance(value, str) else str(value)


def remember(db, run: str, config: ScoreConfig) -> None:
    """Record a settled `config`'s backbone, reference and trigger as the run's scoring settings."""
    reference = str(Path(config.reference).resolve()) if config.reference is not None else None
    db.execute("INSERT OR REPLACE INTO run_scoring (run, backbone_model, backbone_weights, reference, trigger, "
               "updated_at) VALUES (?, ?, ?, ?, ?, current_timestamp)",
               [run, config.backbone.model, config.backbone.pretrained, reference, config.trigger])


def inherit(db, run: str, checkpoint: str) -> None:
    """Give `run`, when it has no scoring settings yet, those of the run `checkpoint` (a sha256) was last scored
    in: a regression run scores like the released checkpoint's own run did."""
    if db.execute("SELECT count(*) FROM run_scoring WHERE run = ?", [run]).fetchone()[0]:
        return
    db.execute("INSERT INTO run_scoring SELECT ?, s.backbone_model, s.backbone_weights, s.reference, s.trigger, "
               "current_timestamp FROM run_scoring s JOIN run_checkpoints rc ON rc.run = s.run "
               "WHERE rc.sha256 = ? AND s.run <> ? ORDER BY s.updated_at DESC LIMIT 1", [run, checkpoint, run])
