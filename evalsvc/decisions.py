"""The release candidate: which checkpoint of a run was chosen, by whom, when and why, and which warnings
(a flag, a significantly worse score) the decider confirmed past."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import InputError


@dataclass(frozen=True)
class Decision:
    run: str
    checkpoint: str  # file name
    decided_by: str
    reason: str
    decided_at: datetime
    overrides: str = ""  # the warnings confirmed when it was marked ("" when there were none)


def mark_release_candidate(db, run: str, checkpoint: str, decided_by: str, reason: str,
                           overrides: str = "") -> Decision:
    """Record `checkpoint` (a candidate's file name) as `run`'s release candidate with the warnings the decider
    confirmed (`overrides`); earlier choices are kept."""
    if not decided_by.strip() or not reason.strip():
        raise InputError("a release decision needs who decided and why")
    found = db.execute("SELECT c.sha256 FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 "
                       "WHERE rc.run = ? AND rc.role = 'candidate' AND c.file_name = ?", [run, checkpoint]).fetchall()
    if len(found) != 1:
        raise InputError(f"run {run!r} has no candidate checkpoint named {checkpoint!r}")
    decision = Decision(run, checkpoint, decided_by.strip(), reason.strip(),
                        datetime.now(timezone.utc).replace(tzinfo=None), overrides.strip())
    db.execute("INSERT INTO decisions (run, checkpoint, decided_by, reason, decided_at, overrides) "
               "VALUES (?, ?, ?, ?, ?, ?)", [run, found[0][0], decision.decided_by, decision.reason,
                                             decision.decided_at, decision.overrides or None])
    return decision


def decisions(db, run: str) -> list[Decision]:
    """Every release decision of `run`, latest first."""
    rows = db.execute("SELECT d.run, c.file_name, d.decided_by, d.reason, d.decided_at, coalesce(d.overrides, '') "
                      "FROM decisions d "
                      "JOIN checkpoints c ON c.sha256 = d.checkpoint WHERE d.run = ? ORDER BY d.decided_at DESC",
                      [run]).fetchall()
    return [Decision(*row) for row in rows]
