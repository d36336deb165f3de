"""Training-output folders: which entries under a folder are checkpoints, which are training state, which are refused.

Layouts (FORMATS.md, "Training-output folders"):
- diffusers' training scripts (accelerate `save_state`): `output/checkpoint-<step>/` holding a LoRA's
  `pytorch_lora_weights.safetensors` or a finetune's `unet/` (and `unet_ema/`) beside `optimizer.bin`,
  `scheduler.bin`, `random_states_<rank>.pkl`, ... (state: skipped); the final LoRA or pipeline in `output/`.
- OneTrainer workspaces: checkpoints in `save/`; `backup/<timestamp>-backup-<step>-<epoch>-<epoch_step>/`
  is resumable state (skipped, as kohya's `<name>-<epoch>-state/` folders are).
- A folder holding a pipeline's component folders (`unet/`, `text_encoder/`, `vae/`) without the
  `model_index.json` that makes it a pipeline is refused whole, not taken apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# accelerate `save_state` (optimizer.bin, scheduler.bin, sampler.bin, random_states_0.pkl, scaler.pt,
# custom_checkpoint_0.pkl; `_N` for the N-th object of a kind) and transformers' Trainer (optimizer.pt,
# scheduler.pt, rng_state.pth, training_args.bin).
STATE_FILES = (
    (re.compile(r"optimizer(_\d+)?\.(bin|pt|pth)"), "optimizer"),
    (re.compile(r"scheduler(_\d+)?\.(bin|pt|pth)"), "scheduler"),
    (re.compile(r"random_states_\d+\.pkl|rng_state(_\d+)?\.pth"), "RNG"),
    (re.compile(r"scaler\.pt"), "grad scaler"),
    (re.compile(r"sampler(_\d+)?\.bin|dl_state_dict(_\d+)?\.bin"), "data loader"),
    (re.compile(r"custom_checkpoint_\d+\.pkl"), "registered objects"),
    (re.compile(r"training_args\.bin"), "training arguments"),
)
CHECKPOINT_FOLDER = re.compile(r"checkpoint[-_]\d+")  # accelerate: checkpoint-<step> (diffusers), checkpoint_<n>
ONETRAINER_BACKUP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-backup-\d+-\d+-\d+")
PIPELINE_PARTS = ("unet", "text_encoder", "text_encoder_2", "vae")


@dataclass
class FolderScan:
    """What one path given to `add` holds."""

    candidates: list[Path] = field(default_factory=list)  # checkpoint files and diffusers folders
    state_files: list[Path] = field(default_factory=list)  # optimizer, scheduler, RNG ... files: skipped
    state_folders: list[Path] = field(default_factory=list)  # kohya -state and OneTrainer backup folders: skipped
    refused: list[tuple[Path, str]] = field(default_factory=list)


def state_kind(path: Path) -> str | None:
    """"optimizer", "scheduler", "RNG", ... for a training-state file's name; None for anything else."""
    return next((kind for pattern, kind in STATE_FILES if pattern.fullmatch(path.name)), None)


def scan(path: Path) -> FolderScan:
    """Sort a file or folder given to `add` into checkpoints, skipped training state and refusals."""
    path, found = Path(path), FolderScan()
    if not path.is_dir():
        if kind := state_kind(path):
            found.refused.append((path, f"training state ({kind}) saved for resuming, not a model"))
        else:
            found.candidates.append(path)
    elif reason := _state_folder(path):
        found.refused.append((path, f"{reason}, not a checkpoint"))
    else:
        _walk(path, found)
        if not (found.candidates or found.state_files or found.state_folders or found.refused):
            found.refused.append((path, f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) or diffusers "
                                        "pipeline folders in it"))
    return found


def _walk(folder: Path, found: FolderScan) -> None:
    if (folder / "model_index.json").is_file():
        found.candidates.append(folder)
        for sub in _entries(folder):  # the checkpoints a finetune script saved beside its final pipeline
            if sub.is_dir() and CHECKPOINT_FOLDER.fullmatch(sub.name):
                _walk(sub, found)
        return
    entries = _entries(folder)
    if reason := _incomplete_pipeline(folder, entries):
        found.refused.append((folder, reason))
        return
    for entry in entries:
        if entry.is_dir():
            if _state_folder(entry):
                found.state_folders.append(entry)
            else:
                _walk(entry, found)
        elif state_kind(entry):
            found.state_files.append(entry)
        elif entry.suffix in CHECKPOINT_SUFFIXES:
            found.candidates.append(entry)


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__pycache__")


def _state_folder(folder: Path) -> str | None:
    if folder.name.endswith("-state"):
        return "kohya training-state folder (saved for resuming)"
    if ONETRAINER_BACKUP.fullmatch(folder.name):
        return "OneTrainer backup (model and optimizer state saved for resuming; its saves are in the workspace's save/)"
    return None


def _incomplete_pipeline(folder: Path, entries: list[Path]) -> str | None:
    """Why a folder holding a pipeline's parts but no model_index.json cannot be taken apart; None when it does not."""
    parts = [p.name for p in entries if p.is_dir() and p.name in PIPELINE_PARTS]
    if "unet" not in parts or len(parts) < 2:
        return None
    if CHECKPOINT_FOLDER.fullmatch(folder.name) or any(state_kind(p) for p in entries):
        trained = [p for p in parts if p.startswith("text_encoder")]
        if trained:
            return (f"training checkpoint with a trained {trained[0]}/ beside its unet/: its UNet alone would be "
                    f"sampled with the base's text encoder, a model never trained; save full pipelines to compare "
                    f"them, or add {folder / 'unet'} itself to sample that UNet anyway")
    return (f"holds the parts of a diffusers pipeline ({', '.join(p + '/' for p in parts)}) but no model_index.json, "
            "so it is not a pipeline folder; copy model_index.json from the pipeline it was saved from (the base "
            f"model's folder), or add {folder / 'unet'} itself to sample its UNet on the run's base")


def skipped_line(files: list[Path], folders: list[Path]) -> str | None:
    """One line for the training state skipped: `skipped 8 training-state files (optimizer, scheduler, RNG) in 2
    folders`; None when nothing was."""
    parts = []
    if files:
        kinds = list(dict.fromkeys(k for _, k in STATE_FILES if any(state_kind(f) == k for f in files)))
        where = len({f.parent for f in files})
        parts.append(f"{len(files)} training-state file{'s' * (len(files) != 1)} ({', '.join(kinds)}) in {where} "
                     f"folder{'s' * (where != 1)}")
    if folders:
        parts.append(f"{len(folders)} resume-state folder{'s' * (len(folders) != 1)} (kohya -state, OneTrainer "
                     "backup)")
    return f"skipped {' and '.join(parts)}: saved for resuming training, not checkpoints" if parts else None
