"""The checkpoint catalog: which checkpoints exist, what they are, and which runs they belong to.

A checkpoint is identified by the sha256 of its content, never by its file name: re-adding the
same bytes under a new name adds nothing, and a changed file is a new checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import CheckpointInfo, inspect_checkpoint
from .checkpoints.detect import A1111Hashes
from .checkpoints.folders import scan
from .checkpoints.naming import is_generic_stem
from .errors import CheckpointError, InputError
from .setting import StackedLora


@dataclass(frozen=True)
class CheckpointRow(A1111Hashes):
    """A registered checkpoint as the store knows it."""

    sha256: str
    path: str
    file_name: str  # the name it goes by (`naming.checkpoint_file_name`), not always the file's: see `path`
    kind: str
    arch: str
    lora_format: str | None
    epoch: int | None
    step: int | None
    ema: bool
    addnet_hash: str | None
    config_path: str | None
    metadata: dict
    status: str
    error: str | None
    role: str = "candidate"

    @property
    def stem(self) -> str:
        """The name people use (UI, reports, `<lora:NAME:1>`, Lora hashes): `file_name` without its suffix, or a
        diffusers folder's name."""
        return Path(self.file_name).stem if self.kind != "diffusers" else self.file_name


@dataclass
class AddReport:
    added: list[CheckpointInfo] = field(default_factory=list)
    known: list[CheckpointInfo] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    ema_changed: dict[str, bool] = field(default_factory=dict)  # sha256 of a known checkpoint -> its old EMA flag
    state_files: list[Path] = field(default_factory=list)  # training state skipped (`folders.scan`)
    state_folders: list[Path] = field(default_factory=list)


_COLUMNS = ("sha256, path, file_name, kind, arch, lora_format, epoch, step, ema, addnet_hash, "
            "config_path, metadata, status, error")


def _row(values, role="candidate") -> CheckpointRow:
    data = dict(zip([c.strip() for c in _COLUMNS.split(",")], values))
    data["metadata"] = json.loads(data["metadata"]) if data["metadata"] else {}
    return CheckpointRow(**data, role=role)


def iter_checkpoint_paths(path: Path) -> list[Path]:
    """A file, a diffusers folder, or every checkpoint under a folder (training state skipped: `folders.scan`)."""
    return scan(Path(path)).candidates


def get_checkpoint(db, sha256: str) -> CheckpointRow | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM checkpoints WHERE sha256 = ?", [sha256]).fetchone()
    return _row(row) if row else None


def run_base(db, run: str) -> CheckpointRow | None:
    row = db.execute("SELECT base_sha256 FROM runs WHERE name = ?", [run]).fetchone()
    if not row or not row[0]:
        return None
    base = get_checkpoint(db, row[0])
    return CheckpointRow(**{**base.__dict__, "role": "base"}) if base else None


def run_bases(db, run: str) -> list[CheckpointRow]:
    """The run's base models: the one its LoRAs were trained on first, then the others (portability) by name."""
    first = run_base(db, run)
    rows = db.execute(
        f"SELECT {', '.join('c.' + c.strip() for c in _COLUMNS.split(','))} FROM run_checkpoints rc "
        "JOIN checkpoints c ON c.sha256 = rc.sha256 WHERE rc.run = ? AND rc.role = 'base' ORDER BY c.file_name",
        [run]).fetchall()
    others = [_row(r, role="base") for r in rows if first is None or r[0] != first.sha256]
    return ([first] if first else []) + others


def run_checkpoints(db, run: str) -> list[CheckpointRow]:
    """The run's checkpoints: its base first, then the rest by EMA flag, epoch, step and name."""
    rows = db.execute(
        f"SELECT {', '.join('c.' + c.strip() for c in _COLUMNS.split(','))}, rc.role FROM run_checkpoints rc "
        "JOIN checkpoints c ON c.sha256 = rc.sha256 WHERE rc.run = ? "
        "ORDER BY rc.role = 'base' DESC, c.ema, c.epoch NULLS LAST, c.step NULLS LAST, c.file_name",
        [run],
    ).fetchall()
    return [_row(r[:-1], role=r[-1]) for r in rows]


def list_runs(db) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM runs ORDER BY created_at, name").fetchall()]


def _insert(db, info: CheckpointInfo, config_path: str | None) -> bool:
    """Record a checkpoint; for known content, adding it again clears an earlier failure (so the
    next `sample` retries it), sets a newly given config folder, and gives a row registered under a
    generic file name (`pytorch_lora_weights.safetensors`) the name that tells it apart."""
    if row := db.execute("SELECT file_name FROM checkpoints WHERE sha256 = ?", [info.sha256]).fetchone():
        name = info.file_name if is_generic_stem(Path(row[0]).stem) else row[0]
        db.execute("UPDATE checkpoints SET status = 'ok', error = NULL, config_path = coalesce(?, config_path), "
                   "file_name = ? WHERE sha256 = ?", [config_path, name, info.sha256])
        return False
    db.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ok', NULL)",
        [info.sha256, str(Path(info.path).resolve()), info.file_name, info.kind, info.arch, info.lora_format,
         info.epoch, info.step, info.ema, info.addnet_hash, config_path, json.dumps(info.metadata)],
    )
    return True


def _set_ema(db, info: CheckpointInfo) -> bool | None:
    """Give a registered checkpoint the EMA flag `info` carries (an explicit --ema/--no-ema); its old flag when
    that changed it, else None. Its samples and scores are kept: they are keyed by content, not by the flag."""
    old = db.execute("SELECT ema FROM checkpoints WHERE sha256 = ?", [info.sha256]).fetchone()[0]
    if bool(old) == info.ema:
        return None
    db.execute("UPDATE checkpoints SET ema = ? WHERE sha256 = ?", [info.ema, info.sha256])
    return bool(old)


def _link(db, run: str, sha256: str, role: str) -> None:
    db.execute("INSERT INTO run_checkpoints (run, sha256, role) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
               [run, sha256, role])


def _ensure_run(db, run: str, base: CheckpointInfo | None) -> None:
    """The run exists, with `base` (the first --base: the one its LoRAs were trained on) as its base."""
    row = db.execute("SELECT base_sha256 FROM runs WHERE name = ?", [run]).fetchone()
    if row is None:
        db.execute("INSERT INTO runs (name, base_sha256) VALUES (?, ?)", [run, base.sha256 if base else None])
    elif base is not None and row[0] not in (None, base.sha256):
        name = db.execute("SELECT file_name FROM checkpoints WHERE sha256 = ?", [row[0]]).fetchone()
        raise InputError(f"run {run!r} was trained on the base {name[0] if name else row[0][:12]}; name it first "
                         f"to add other bases (--base {name[0] if name else 'FIRST'} --base OTHER), or use a new "
                         "run name")
    elif base is not None and row[0] is None:
        db.execute("UPDATE runs SET base_sha256 = ? WHERE name = ?", [base.sha256, run])


def add_checkpoints(store, paths: list[Path], run: str, *, base: Path | list[Path] | None = None,
                    ema: bool | None = None, allow_pickle: bool = False, config: Path | None = None) -> AddReport:
    """Register checkpoint files and folders under `run`; bad files are refused one by one.

    `base` is one base model or several: the first is the one the run's LoRAs were trained on, the others are
    bases every LoRA of the run is also sampled on (portability)."""
    if not run or not run.strip():
        raise InputError("--run needs a non-empty name")
    report = AddReport()
    bases = [] if base is None else ([base] if isinstance(base, (str, Path)) else list(base))
    infos = []
    for path in bases:
        info = inspect_checkpoint(path, allow_pickle=allow_pickle)
        if info.kind not in ("full", "diffusers"):
            raise CheckpointError(path, f"a base model must be a full checkpoint or a diffusers folder, not {info.kind}")
        if info.sha256 not in {i.sha256 for i in infos}:
            infos.append(info)
    with store.transaction() as db:
        _ensure_run(db, run, infos[0] if infos else None)
        for info in infos:
            (report.added if _insert(db, info, str(config) if config else None) else report.known).append(info)
            _link(db, run, info.sha256, "base")
    base_row = run_base(store.db, run)
    for path in paths:
        found = scan(Path(path))
        report.refused.extend((str(p), reason) for p, reason in found.refused)
        report.state_files.extend(found.state_files)
        report.state_folders.extend(found.state_folders)
        for candidate in found.candidates:
            try:
                info = inspect_checkpoint(candidate, allow_pickle=allow_pickle, ema=ema)
                if info.kind == "lora" and base_row is not None and base_row.arch != info.arch:
                    raise CheckpointError(candidate, f"LoRA is for {info.arch} but the run's base "
                                                     f"{base_row.file_name!r} is {base_row.arch}")
            except CheckpointError as exc:
                report.refused.append((str(candidate), exc.reason))
                continue
            with store.transaction() as db:
                if _insert(db, info, None):
                    report.added.append(info)
                else:
                    report.known.append(info)
                    if ema is not None and (old := _set_ema(db, info)) is not None:
                        report.ema_changed[info.sha256] = old
                _link(db, run, info.sha256, "candidate")
    return report


def register_stack(store, files, allow_pickle: bool = False) -> tuple[StackedLora, ...]:
    """Register the companion LoRAs of `--with-lora FILE[:SCALE]` ((path, strength) pairs) in the catalog (not in a
    run: they are part of every cell's setting) and return the stack."""
    stack = []
    for path, strength in files:
        info = inspect_checkpoint(Path(path), allow_pickle=allow_pickle)
        if info.kind != "lora":
            raise CheckpointError(path, f"--with-lora takes LoRA files; this is a {info.kind} checkpoint")
        with store.transaction() as db:
            _insert(db, info, None)
        if info.sha256 in {s.sha256 for s in stack}:
            raise InputError(f"--with-lora {path}: the same LoRA is given twice")
        stack.append(StackedLora(info.sha256, float(strength)))
    return tuple(stack)


def compose_run(store, run: str, base_sha256: str | None, candidates: list[str]) -> None:
    """A run made of checkpoints already registered: `base_sha256` as its base and `candidates`."""
    with store.transaction() as db:
        row = db.execute("SELECT base_sha256 FROM runs WHERE name = ?", [run]).fetchone()
        if row is None:
            db.execute("INSERT INTO runs (name, base_sha256) VALUES (?, ?)", [run, base_sha256])
        elif row[0] != base_sha256:
            raise InputError(f"run {run!r} already has another base model; use a new run name")
        if base_sha256 is not None:
            _link(db, run, base_sha256, "base")
        for sha in candidates:
            _link(db, run, sha, "candidate")


def mark_failed(db, sha256: str, reason: str) -> None:
    db.execute("UPDATE checkpoints SET status = 'failed', error = ? WHERE sha256 = ?", [reason, sha256])


def run_file_names(db, run: str) -> set[str]:
    """File names of every checkpoint registered under `run` (base included)."""
    return {name for name, in db.execute(
        "SELECT c.file_name FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 WHERE rc.run = ?",
        [run]).fetchall()}
