"""`evalsvc regress`: sample baseline and candidate on one frozen grid, score them, gate the paired deltas.

Both checkpoints join a run of their own (`regress-<baseline12>-<candidate12>`, with their base model), so
the grid is planned, sampled and scored like any run and every cell sampled before is reused. Deltas are
paired on (prompt, seed) at each setting of the grid (`evalsvc.setting`), and the gates (`gates.py`) decide at
every setting (or at those the gates file names; the others are reported): the candidate passes only when it
passes at each. The verdict is stored with both checkpoints' hashes, the suite's hash and the gates' hash
(`verdicts.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..stats.bootstrap import BootstrapConfig
from ..setting import parse_pins
from ..stats.noninferiority import Evaluation
from .refs import Ref, resolve_ref


REGRESS_RUN_PREFIX = "regress-"  # the runs `regress` makes for itself (the app's run chooser hides them)


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
    evaluation: Evaluation  # every setting's gate results (GateResult.setting names it)
    cells: int  # paired (prompt, seed, setting) cells
    sampled_now: int
    tags: dict[str, tuple[str, ...]]  # prompt id -> its tags and role (the slices)
    images: dict[str, dict[tuple[str, int, str], str]]  # "baseline"/"candidate" -> (prompt, seed, setting) -> image
    settings: dict[str, str] = field(default_factory=dict)  # setting key -> the setting in words
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
    """{setting: ({metric: {(prompt, seed): value}} of the baseline, the same of the candidate)}, on the cells both
    have at that setting."""
    from ..scoring.results import metric_values

    out: dict = {}
    for metric in metrics:
        values = metric_values(store, run, metric)
        for setting in {s for (_, s) in values}:
            base, cand = values.get((shas[0], setting), {}), values.get((shas[1], setting), {})
            shared = set(base) & set(cand)
            if shared:
                sides = out.setdefault(setting, ({}, {}))
                sides[0][metric] = {k: base[k] for k in shared}
                sides[1][metric] = {k: cand[k] for k in shared}
    return out


def _evaluate(gates, paired: dict, tags, bootstrap, names) -> tuple[Evaluation, dict[str, str]]:
    """Every setting's gate results in one evaluation (it fails when any setting fails)."""
    from dataclasses import replace

    from ..setting import Setting, select, short_label
    from .gates import evaluate_gates

    settings = sorted(paired, key=Setting.sort_key)
    gated = set(settings)
    if gates.settings:
        gated = {s for text in gates.settings for s in select(settings, parse_pins(text), names,
                                                               what=f"{gates.source}: settings:")}
    results, labels = [], {}
    for setting in settings:
        label = short_label(setting, settings, names) if len(settings) > 1 else ""
        base, cand = paired[setting]
        evaluation = evaluate_gates(gates if setting in gated else gates.informational(), cand, base, tags, bootstrap)
        results += [replace(r, setting=label) for r in evaluation.results]
        labels[setting.key] = short_label(setting, settings, names)
    return Evaluation(tuple(results), gates.content_hash()), labels


def _images(store, run: str, shas: tuple[str, str]) -> dict[str, dict]:
    rows = store.db.execute(
        "SELECT w.checkpoint, g.prompt_id, w.seed, g.setting, s.image_path FROM grid_cells g JOIN work w "
        "ON w.key = g.key JOIN samples s ON s.key = g.key WHERE g.run = ?", [run]).fetchall()
    out: dict[str, dict] = {"baseline": {}, "candidate": {}}
    for sha, prompt, seed, setting, image in rows:
        for name, side_sha in zip(("baseline", "candidate"), shas):
            if sha == side_sha:
                out[name][(prompt, int(seed), setting)] = image
    return out


def regress(store, request: RegressRequest, options, runner_config, score_config) -> RegressResult:
    """Sample, score and gate `request.candidate` against `request.baseline` (see the module docstring)."""
    from ..catalog import compose_run
    from ..sampling.runner import sample_run
    from ..scoring.run_settings import inherit
    from ..scoring.runner import score_run
    from ..suites import load_suite
    from .gates import default_gates, load_gates
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
    run = f"{REGRESS_RUN_PREFIX}{baseline.sha256[:12]}-{candidate.sha256[:12]}"
    compose_run(store, run, base, [baseline.sha256, candidate.sha256])
    report = sample_run(store, run, suite, options, runner_config)
    if report.failed:
        raise InputError(f"{report.failed} cells of the regression grid could not be sampled: "
                         + "; ".join(f"{p}: {r}" for p, r in report.failures[:3]))
    with store.transaction() as db:
        inherit(db, run, baseline.sha256)
    scoring = score_run(store, run, score_config)
    shas = (baseline.sha256, candidate.sha256)
    paired = _paired_scores(store, run, known, shas)
    if not paired:
        raise InputError(f"no per-image scores for run {run!r}: every scorer was skipped (see the lines above)")
    names = {baseline.sha256: baseline.file_name, candidate.sha256: candidate.file_name}
    if base is not None:
        names.setdefault(base, "base")
    evaluation, labels = _evaluate(gates, paired, tags, request.bootstrap, names)
    cells = sum(max(len(v) for v in cand.values()) for _, cand in paired.values())
    cfgs = tuple(sorted({s.cfg for s in paired if s.cfg is not None}))
    return RegressResult(run, baseline, candidate, suite.name, suite.content_hash, cfgs, evaluation, cells,
                         report.sampled, tags, _images(store, run, shas), scoring_note=scoring.settings,
                         settings=labels)
