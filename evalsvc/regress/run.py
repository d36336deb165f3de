"""`evalsvc regress`: sample baseline and candidate on one frozen grid, score them, gate the paired deltas.

Both checkpoints join a run of their own (`regress-<baseline12>-<candidate12>`, with their base model), so
the grid is planned, sampled and scored like any run and every cell sampled before is reused. Deltas are
paired on (prompt, seed, CFG); the gates (`gates.py`) decide, and the verdict is stored with both
checkpoints' hashes, the suite's hash and the gates' hash (`verdicts.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..stats.bootstrap import BootstrapConfig
from ..stats.noninferiority import Evaluation
from .refs import Ref, resolve_ref


@dataclass(frozen=True)
class RegressRequest:
    baseline: str
    candidate: str
    suite: str
    gates: Path | None = None
    base: Path | None = None  # the base model, for LoRA files not registered yet
    allow_suite_change: bool = False
    allow_pickle: bool = False
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass(frozen=True)
class RegressResult:
    run: str
    baseline: Ref
    candidate: Ref
    suite_name: str
    suite_hash: str
    cfgs: tuple[float, ...]
    evaluation: Evaluation
    cells: int  # paired (prompt, seed, CFG) cells
    sampled_now: int
    tags: dict[str, tuple[str, ...]]  # prompt id -> its tags and role (the slices)
    images: dict[str, dict[tuple[str, int, float], str]]  # "baseline"/"candidate" -> cell -> image path
    scoring_note: str | None = None  # the scoring settings taken from the baseline's run, when any were

    @property
    def exit_code(self) -> int:
        return 0 if self.evaluation.verdict == "pass" else 1


def image_metrics() -> dict[str, bool]:
    """Per-image metrics (name -> higher_is_better): the ones a paired regression can gate."""
    from ..scoring.registry import scorer_registry

    return {name: scorer.higher_is_better for name, scorer in scorer_registry().items() if scorer.level == "image"}


def _common_base(baseline: Ref, candidate: Ref) -> str | None:
    needs = [r for r in (baseline, candidate) if r.kind in ("lora", "unet")]
    bases = {r.base_sha256 for r in needs}
    if None in bases:
        missing = next(r for r in needs if r.base_sha256 is None)
        raise InputError(f"{missing.text!r} is a {missing.kind} without a base model: register it with "
                         "`evalsvc add --base MODEL` or pass --base MODEL")
    if len(bases) > 1:
        raise InputError(f"baseline {baseline.file_name} and candidate {candidate.file_name} have different base "
                         "models; a regression compares checkpoints on the same base")
    if baseline.arch != candidate.arch:
        raise InputError(f"baseline is {baseline.arch} and candidate is {candidate.arch}")
    return bases.pop() if bases else None


def _paired_scores(store, run: str, metrics: dict[str, bool], shas: tuple[str, str]):
    """{metric: {(prompt, (seed, cfg)): value}} for baseline and candidate, on the cells both have."""
    from ..scoring.results import metric_values

    sides: tuple[dict, dict] = ({}, {})
    for metric in metrics:
        values = metric_values(store, run, metric)
        for side, sha in zip(sides, shas):
            side[metric] = {(prompt, (seed, cfg)): value for (s, cfg), cells in values.items() if s == sha
                            for (prompt, seed), value in cells.items()}
        shared = set(sides[0][metric]) & set(sides[1][metric])
        for side in sides:
            side[metric] = {k: v for k, v in side[metric].items() if k in shared}
            if not side[metric]:
                del side[metric]
    return sides


def _images(store, run: str, shas: tuple[str, str]) -> dict[str, dict]:
    rows = store.db.execute(
        "SELECT w.checkpoint, g.prompt_id, w.seed, w.cfg, s.image_path FROM grid_cells g JOIN work w ON w.key = g.key "
        "JOIN samples s ON s.key = g.key WHERE g.run = ?", [run]).fetchall()
    out: dict[str, dict] = {"baseline": {}, "candidate": {}}
    for sha, prompt, seed, cfg, image in rows:
        for name, side_sha in zip(("baseline", "candidate"), shas):
            if sha == side_sha:
                out[name][(prompt, int(seed), float(cfg))] = image
    return out


def regress(store, request: RegressRequest, options, runner_config, score_config) -> RegressResult:
    """Sample, score and gate `request.candidate` against `request.baseline` (see the module docstring)."""
    from ..catalog import compose_run
    from ..sampling.runner import sample_run
    from ..scoring.run_settings import inherit
    from ..scoring.runner import score_run
    from ..suites import load_suite
    from .gates import default_gates, evaluate_gates, load_gates
    from .verdicts import check_suite_unchanged

    suite = load_suite(request.suite)
    known = image_metrics()
    tags = {p.id: tuple(sorted({*p.tags, p.role})) for p in suite.prompts}
    slices = {t for ts in tags.values() for t in ts}
    gates = load_gates(request.gates, known, slices) if request.gates else default_gates(known)
    baseline = resolve_ref(store, request.baseline, "baseline", base=request.base, allow_pickle=request.allow_pickle)
    candidate = resolve_ref(store, request.candidate, "candidate", base=request.base,
                            allow_pickle=request.allow_pickle)
    if not request.allow_suite_change:
        check_suite_unchanged(store.db, baseline, suite)
    base = _common_base(baseline, candidate)
    run = f"regress-{baseline.sha256[:12]}-{candidate.sha256[:12]}"
    compose_run(store, run, base, [baseline.sha256, candidate.sha256])
    report = sample_run(store, run, suite, options, runner_config)
    if report.failed:
        raise InputError(f"{report.failed} cells of the regression grid could not be sampled: "
                         + "; ".join(f"{p}: {r}" for p, r in report.failures[:3]))
    with store.transaction() as db:
        inherit(db, run, baseline.sha256)
    scoring = score_run(store, run, score_config)
    shas = (baseline.sha256, candidate.sha256)
    base_scores, cand_scores = _paired_scores(store, run, known, shas)
    if not cand_scores:
        raise InputError(f"no per-image scores for run {run!r}: every scorer was skipped (see the lines above)")
    evaluation = evaluate_gates(gates, cand_scores, base_scores, tags, request.bootstrap)
    cells = max(len(v) for v in cand_scores.values())
    cfgs = tuple(sorted({k[1][1] for v in cand_scores.values() for k in v}))
    return RegressResult(run, baseline, candidate, suite.name, suite.content_hash, cfgs, evaluation, cells,
                         report.sampled, tags, _images(store, run, shas), scoring.settings)
