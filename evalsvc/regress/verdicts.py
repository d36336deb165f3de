"""Past regression verdicts in the store: recorded with both checkpoints' hashes, the suite's and the gates'.

They are listed and re-opened by `evalsvc verdicts`, and they pin the suite: gating a baseline again with a
suite of the same name but other contents is refused (`check_suite_unchanged`), since the numbers would not
be comparable with the earlier verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import InputError


@dataclass(frozen=True)
class StoredVerdict:
    id: int
    created_at: datetime
    baseline: str
    candidate: str
    suite_name: str
    suite_hash: str
    gates_hash: str
    verdict: str


def record_verdict(db, result, reports: dict[str, str]) -> int:
    """Store a regression result with its md, html and json reports; returns its id."""
    return db.execute(
        "INSERT INTO regressions (created_at, baseline_sha256, candidate_sha256, baseline_name, candidate_name, "
        "suite_name, suite_hash, gates_hash, verdict, report_json, report_md, report_html) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        [datetime.now(timezone.utc).replace(tzinfo=None), result.baseline.sha256, result.candidate.sha256,
         result.baseline.file_name, result.candidate.file_name, result.suite_name, result.suite_hash,
         result.evaluation.gates_hash, result.evaluation.verdict, reports["json"], reports["md"], reports["html"]],
    ).fetchone()[0]


def list_verdicts(db, limit: int = 50) -> list[StoredVerdict]:
    rows = db.execute("SELECT id, created_at, baseline_name || ' [' || baseline_sha256[:12] || ']', "
                      "candidate_name || ' [' || candidate_sha256[:12] || ']', suite_name, suite_hash, gates_hash, "
                      "verdict FROM regressions ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    return [StoredVerdict(*row) for row in rows]


def stored_report(db, verdict_id: int, fmt: str) -> str:
    """A past verdict's report as it was written (fmt: md, html or json)."""
    column = {"md": "report_md", "html": "report_html", "json": "report_json"}.get(fmt)
    if column is None:
        raise InputError(f"--format must be md, html or json, got {fmt!r}")
    row = db.execute(f"SELECT {column} FROM regressions WHERE id = ?", [verdict_id]).fetchone()
    if row is None:
        raise InputError(f"no stored verdict {verdict_id} (see `evalsvc verdicts`)")
    return row[0] if fmt != "json" else json.dumps(json.loads(row[0]), indent=2)


def check_suite_unchanged(db, baseline, suite) -> None:
    """Refuse to gate `baseline` on `suite` when it was gated before on a suite of that name with other prompts."""
    row = db.execute("SELECT suite_hash, created_at FROM regressions WHERE baseline_sha256 = ? AND suite_name = ? "
                     "ORDER BY id DESC LIMIT 1", [baseline.sha256, suite.name]).fetchone()
    if row is not None and row[0] != suite.content_hash:
        raise InputError(
            f"suite {suite.name!r} changed since baseline {baseline.file_name} was gated with it on "
            f"{row[1]:%Y-%m-%d %H:%M} (hash {row[0][:12]} then, {suite.content_hash[:12]} now): its verdicts would "
            "not be comparable; use the earlier suite, or pass --allow-suite-change to start over with this one")
