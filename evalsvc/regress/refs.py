"""`--baseline` and `--candidate`: a registered checkpoint, or a file to register, pinned by content hash.

A REF is one of
- a checkpoint file or diffusers folder on disk (registered like `evalsvc add` when it is new);
- a registered checkpoint's file name or stem (`purple-000006.safetensors`, `purple-000006`);
- `RUN:EPOCH` or `RUN:EPOCH:ema` (a run's raw or EMA checkpoint of that epoch);
- a sha256 prefix of at least 8 hex digits.
Anything that matches nothing, or more than one checkpoint, is refused with the matches listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Ref:
    text: str  # as the user gave it
    sha256: str
    file_name: str
    kind: str  # lora, full, unet, diffusers
    arch: str
    base_sha256: str | None  # the base of a run it is registered in (a LoRA needs one)


def _lookup(db, where: str, params: list) -> list[tuple]:
    return db.execute(
        "SELECT c.sha256, c.file_name, c.kind, c.arch, (SELECT r.base_sha256 FROM run_checkpoints rc JOIN runs r "
        "ON r.name = rc.run WHERE rc.sha256 = c.sha256 AND r.base_sha256 IS NOT NULL ORDER BY r.created_at LIMIT 1) "
        f"FROM checkpoints c WHERE {where} ORDER BY c.file_name", params).fetchall()


def _matches(db, text: str) -> list[tuple]:
    epoch = re.fullmatch(r"(.+):(\d+)(:ema)?", text)
    if epoch:
        run, number, ema = epoch.group(1), int(epoch.group(2)), bool(epoch.group(3))
        return _lookup(db, "c.sha256 IN (SELECT sha256 FROM run_checkpoints WHERE run = ? AND role = 'candidate') "
                           "AND c.epoch = ? AND c.ema = ?", [run, number, ema])
    found = _lookup(db, "c.file_name = ? OR regexp_replace(c.file_name, '\\.(safetensors|ckpt|pt|pth|bin)$', '') = ?",
                    [text, text])
    if not found and re.fullmatch(r"[0-9a-fA-F]{8,64}", text):
        found = _lookup(db, "starts_with(c.sha256, ?)", [text.lower()])
    return found


def resolve_ref(store, text: str, what: str, *, base: Path | None = None, allow_pickle: bool = False) -> Ref:
    """The checkpoint `text` names (`what` is "baseline" or "candidate", for messages); a new file is registered
    under the run `regress-files` (with `base` for a LoRA)."""
    from ..catalog import add_checkpoints

    if not text or not text.strip():
        raise InputError(f"--{what} needs a checkpoint")
    path = Path(text)
    if path.exists():
        report = add_checkpoints(store, [path], "regress-files", base=base, allow_pickle=allow_pickle)
        if report.refused:
            raise InputError(f"--{what} {text}: {report.refused[0][1]}")
        sha = (report.added or report.known)[0].sha256
        found = _lookup(store.db, "c.sha256 = ?", [sha])
    else:
        found = _matches(store.db, text)
    if not found:
        raise InputError(f"--{what} {text!r}: no registered checkpoint has this file name, RUN:EPOCH or hash prefix, "
                         "and no such file exists")
    if len(found) > 1:
        names = ", ".join(f"{name} [{sha[:12]}]" for sha, name, *_ in found[:6])
        raise InputError(f"--{what} {text!r} matches {len(found)} checkpoints ({names}); give a hash prefix")
    sha, name, kind, arch, base_sha = found[0]
    return Ref(text, sha, name, kind, arch, base_sha)
