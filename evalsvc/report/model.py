"""The data of a run's report, gathered from the store once for every output format.

Every checkpoint is reported at one setting (`evalsvc.setting`): its own best by the primary metric,
or the one `--judge at:` pins; scores of different settings are never pooled. The recommendation is made
under the judging policy (`stats.judge`), and says which. Prompts each metric is judged on: the primary metric and the adherence metrics
(`ReportConfig.adherence`, which score an image against its prompt's text) on the primary's prompt
role, the target prompts that show the concept being taught; every other metric on all the prompts
it has values for (prompt role None): drift and drift_clip exist only on holdout prompts,
memorisation and overcooking on all. Intervals are the nested (prompt, then seed) cluster bootstrap.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from ..decisions import Decision, decisions
from ..errors import InputError
from ..goals import Goal
from ..scoring.results import (AnalysisConfig, CheckpointInfo, checkpoint_names, leaderboard, metric_values,
                               run_checkpoints, run_recommendation, stored_metrics)
from ..setting import Setting, varying_axes
from ..stats import BootstrapConfig, Estimate, Recommendation, estimate_scores
from ..stats.judge import Judge, judged_settings, pick_best
from .portability import AXES as PORTABILITY_AXES
from .portability import Portability, portability, portability_json

SERIES = ("overall", "raw", "ema")  # the recommendations: all candidates, raw only, EMA only


@dataclass(frozen=True)
class ReportConfig:
    """What the report ranks by, on which prompts, and how many images it shows."""

    primary: str = "clip_t"
    prompt_role: str = "target"  # the prompts the primary and adherence metrics are judged on
    adherence: tuple[str, ...] = ("clip_t", "clip_t_untriggered", "oracle")
    strip_candidates: int = 3  # image strips for this many top candidates (and the base)
    strip_images: int = 4  # images per strip
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    judge: Judge = field(default_factory=Judge)
    goal: Goal | None = None  # what the LoRA is for (`evalsvc.goals`); then `primary` is its fidelity metric

    def __post_init__(self):
        if self.goal is not None:
            object.__setattr__(self, "primary", self.goal.fidelity)
        if not isinstance(self.primary, str) or not self.primary:
            raise InputError(f"the primary metric must be a metric name, got {self.primary!r}")
        for name in ("strip_candidates", "strip_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a non-negative integer, got {value!r}")

    def analysis(self, prompt_role: str | None, ema: bool | None = None) -> AnalysisConfig:
        return AnalysisConfig(primary=self.primary, prompt_role=prompt_role, ema=ema, bootstrap=self.bootstrap,
                              judge=self.judge, goal=self.goal)

    def metric_role(self, metric: str) -> str | None:
        following = self.goal.following if self.goal else None
        return self.prompt_role if metric in (self.primary, following) or metric in self.adherence else None


@dataclass(frozen=True)
class MetricInfo:
    """A metric as the report shows it; `prompts` is the one prompt role its values are on (None: several)."""

    name: str
    level: str  # "image" or "set"
    higher_is_better: bool
    description: str
    prompts: str | None


@dataclass(frozen=True)
class SetValue:
    """A set-level metric of one checkpoint at one setting: the mean over its groups (one per prompt, or one for
    the whole set), with a bootstrap interval over groups when there are several, else the scorer's std."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    std: float | None
    groups: int
    images: int


@dataclass(frozen=True)
class CheckpointRow:
    """One checkpoint at its reported setting (its best for the primary metric, or the pinned one), with every
    metric's value there, the runner-up setting, and the primary metric at every setting it was sampled at."""

    info: CheckpointInfo
    setting: Setting
    metrics: dict[str, Estimate]
    set_metrics: dict[str, SetValue]
    by_setting: dict[Setting, Estimate] = field(default_factory=dict)  # the primary metric
    runner_up: Setting | None = None


@dataclass(frozen=True)
class LossPoint:
    step: int
    epoch: int
    loss: float


@dataclass(frozen=True)
class StripImage:
    path: Path
    prompt: str
    seed: int


@dataclass(frozen=True)
class Strip:
    """A few images of one checkpoint at its reported setting, on the same prompts and seeds as the other strips."""

    checkpoint: CheckpointInfo
    setting: Setting
    why: str
    images: tuple[StripImage, ...]


@dataclass(frozen=True)
class Report:
    run: str
    config: ReportConfig
    metrics: tuple[MetricInfo, ...]
    rows: tuple[CheckpointRow, ...]
    recommendations: dict[str, Recommendation]  # keys from SERIES; "raw"/"ema" only when both kinds exist
    loss: tuple[LossPoint, ...]
    strips: tuple[Strip, ...]
    unscored: tuple[str, ...]  # checkpoints without primary-metric values (not in `rows`)
    decisions: tuple[Decision, ...] = ()  # release candidates marked in the app, latest first
    settings: tuple[Setting, ...] = ()  # every setting the run has images at
    names: dict[str, str] = field(default_factory=dict)  # sha256 -> file name (bases, stacks)
    portability: tuple[Portability, ...] = ()  # checkpoint x base (and x stack) when the run has several

    def where(self, setting: Setting, checkpoint: CheckpointInfo | None = None) -> str:
        """A setting in words, by the axes that vary in this run (without the LoRA strength for a base model's
        row: its images are the same at every strength)."""
        axes = [a for a in varying_axes(self.settings) or ("cfg",)
                if not (a == "lora_scale" and checkpoint is not None and checkpoint.role == "base")]
        return setting.label(axes, self.names)

    def metric(self, name: str) -> MetricInfo:
        return next(m for m in self.metrics if m.name == name)

    def notes(self) -> list[str]:
        """What the numbers mean, in sentences shared by every format."""
        c = self.config
        adherence = [m.name for m in self.metrics if c.metric_role(m.name) is not None]
        shown = (f"at the setting {c.judge.text.removeprefix('at:')}" if c.judge.policy == "at"
                 else f"at its best setting by the mean of {c.primary} on {c.prompt_role} prompts")
        notes = [f"Each checkpoint is shown {shown}; scores of different settings are never pooled.",
                 f"Judging policy (--judge {c.judge.text}): {c.judge.describe()}.",
                 f"{', '.join(adherence)} {'is' if len(adherence) == 1 else 'are'} judged on {c.prompt_role} prompts; "
                 "every other metric on all the prompts it has values for (drift only exists on holdout prompts).",
                 f"Brackets are {100 * c.bootstrap.confidence:g}% intervals of a nested bootstrap over prompts, "
                 "then seeds."]
        if any(m.level == "set" for m in self.metrics):
            notes.append("Set-level metrics with one value per prompt (diversity) are bootstrapped over prompts; "
                         "those with one value per checkpoint (KID, FID) show the scorer's own std when it has one.")
        if self.unscored:
            notes.append(f"Not shown (no {c.primary} values on {c.prompt_role} prompts): {', '.join(self.unscored)}.")
        return notes


def gather_report(store, run: str, config: ReportConfig = ReportConfig()) -> Report:
    """Everything a report shows about `run`; InputError for an unknown run or one without usable scores."""
    from ..scoring.registry import scorer_registry

    registry = scorer_registry()
    _check_request(store, run, config, registry)
    image_metrics = stored_metrics(store, run)
    set_rows = _set_rows(store, run)
    roles = _prompt_roles(store, run)
    metrics = tuple(MetricInfo(name, s.level, s.higher_is_better, s.description,
                               config.metric_role(name) or _single(roles.get(name, ())))
                    for name, s in registry.items()
                    if name in image_metrics or (s.level == "set" and name in set_rows))
    checkpoints = run_checkpoints(store, run)
    names = checkpoint_names(store.db)
    estimates = _estimates(store, run, image_metrics, config)
    primary = estimates[config.primary]
    higher = registry[config.primary].higher_is_better
    pinned = None
    if config.judge.policy == "at":
        (pinned,) = judged_settings(config.judge, sorted({s for by in primary.values() for s in by},
                                                         key=Setting.sort_key), names)
    values = metric_values(store, run, config.primary, config.metric_role(config.primary))
    rows = []
    for sha, info in checkpoints.items():
        by_setting = primary.get(sha, {})
        if not by_setting or (pinned is not None and pinned not in by_setting):
            continue
        best, runner_up = pick_best({s: values[(sha, s)] for s in by_setting}, higher)
        setting = pinned or best
        rows.append(CheckpointRow(info, setting,
                                  {m: by[sha][setting] for m, by in estimates.items() if setting in by.get(sha, {})},
                                  {m: v for m, by in set_rows.items() if (v := _set_value(by, sha, setting, config))},
                                  dict(sorted(by_setting.items(), key=lambda kv: kv[0].sort_key())),
                                  None if pinned else runner_up))
    if not any(r.info.role == "candidate" for r in rows):
        raise InputError(f"run {run!r} has no candidate checkpoint with {config.primary} scores on "
                         f"{config.prompt_role} prompts" + (f" at {config.judge.text}" if pinned else ""))
    recommendations = _recommendations(store, run, rows, config)
    settings = tuple(sorted({s for by in primary.values() for s in by}, key=Setting.sort_key))
    return Report(run, config, metrics, tuple(rows), recommendations, _loss(store, run),
                  _strips(store, run, rows, recommendations["overall"], higher, config),
                  tuple(i.file_name for sha, i in checkpoints.items() if sha not in primary),
                  tuple(decisions(store.db, run)), settings, names,
                  _portability(store, run, primary, values, checkpoints, names, higher, config))


def _portability(store, run: str, primary, values, checkpoints, names, higher: bool, config: ReportConfig):
    from ..catalog import run_bases

    bases = {b.file_name: b.sha256 for b in run_bases(store.db, run)}
    matrices = (portability(axis, primary, values, names, list(checkpoints), bases, higher, config.bootstrap)
                for axis in PORTABILITY_AXES)
    return tuple(m for m in matrices if m is not None)


def _check_request(store, run: str, config: ReportConfig, registry) -> None:
    if not store.db.execute("SELECT count(*) FROM runs WHERE name = ?", [run]).fetchone()[0]:
        known = [r for r, in store.db.execute("SELECT name FROM runs ORDER BY name").fetchall()]
        raise InputError(f"no run named {run!r} in the store {store.layout.root} "
                         f"(runs: {', '.join(known[:10]) + (', ...' if len(known) > 10 else '') or 'none'})")
    image_level = [name for name, s in registry.items() if s.level == "image"]
    if config.primary not in image_level:
        raise InputError(f"the primary metric must be an image-level metric ({', '.join(image_level)}), "
                         f"got {config.primary!r}")
    stored = stored_metrics(store, run)
    if not stored:
        raise InputError(f"run {run!r} has no scores yet; run `evalsvc score --run {run}` first")
    if config.primary not in stored:
        raise InputError(f"run {run!r} has no {config.primary} scores (it has {', '.join(stored)}); "
                         f"choose another --primary or score {config.primary}")


def _prompt_roles(store, run: str) -> dict[str, set[str]]:
    """The prompt roles each image-level metric has values on (drift: holdout only)."""
    out = defaultdict(set)
    for metric, role in store.db.execute(
            "SELECT DISTINCT s.metric, p.role FROM scores s JOIN grid_cells g ON g.key = s.key AND g.run = ? "
            "JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id WHERE s.value IS NOT NULL",
            [run]).fetchall():
        out[metric].add(role)
    return out


def _single(roles) -> str | None:
    return next(iter(roles)) if len(roles) == 1 else None


def _estimates(store, run: str, metrics: list[str], config: ReportConfig):
    """{metric: {sha: {setting: Estimate}}} with each metric on its prompts."""
    by_role = defaultdict(list)
    for metric in metrics:
        by_role[config.metric_role(metric)].append(metric)
    out = {metric: defaultdict(dict) for metric in metrics}
    for role, names in by_role.items():
        for row in leaderboard(store, run, names, config.analysis(role)):
            out[row.metric][row.checkpoint.sha256][row.setting] = row.estimate
    return out


def _set_rows(store, run: str):
    """{metric: {(sha, setting): [(prompt_id, value, std, n)]}} of the run's set-level scores."""
    out = defaultdict(lambda: defaultdict(list))
    for metric, sha, setting, prompt_id, value, std, n in store.db.execute(
            "SELECT metric, checkpoint, setting, prompt_id, value, std, n FROM set_scores WHERE run = ? "
            "AND value IS NOT NULL ORDER BY metric, checkpoint, setting, prompt_id", [run]).fetchall():
        out[metric][(sha, Setting.from_key(setting))].append((prompt_id, float(value), std, int(n)))
    return out


def _set_value(by_group, sha: str, setting: Setting, config: ReportConfig) -> SetValue | None:
    groups = by_group.get((sha, setting))
    if not groups:
        return None
    images = sum(n for _, _, _, n in groups)
    if len(groups) == 1:
        _, value, std, _ = groups[0]
        return SetValue(value, None, None, None if std is None else float(std), 1, images)
    e = estimate_scores({(prompt_id, 0): value for prompt_id, value, _, _ in groups}, config.bootstrap)
    return SetValue(e.mean, e.ci_low, e.ci_high, None, len(groups), images)


def _recommendations(store, run: str, rows: list[CheckpointRow], config: ReportConfig) -> dict[str, Recommendation]:
    out = {"overall": run_recommendation(store, run, config.analysis(config.prompt_role))}
    if {r.info.ema for r in rows if r.info.role == "candidate"} == {False, True}:
        out["raw"] = run_recommendation(store, run, config.analysis(config.prompt_role, ema=False))
        out["ema"] = run_recommendation(store, run, config.analysis(config.prompt_role, ema=True))
    return out


def _loss(store, run: str) -> tuple[LossPoint, ...]:
    rows = store.db.execute("SELECT step, epoch, loss FROM losses WHERE run = ? ORDER BY step", [run]).fetchall()
    return tuple(LossPoint(int(step), int(epoch), float(loss)) for step, epoch, loss in rows)


def _strips(store, run: str, rows: list[CheckpointRow], recommendation: Recommendation, higher: bool,
            config: ReportConfig) -> tuple[Strip, ...]:
    """The recommended checkpoint, then the next best eligible candidates by the primary mean, then the base."""
    from ..scoring.cells import run_cells

    excluded = {v.name for v in recommendation.verdicts if v.status == "excluded"}
    sign = 1.0 if higher else -1.0
    by_mean = sorted((r for r in rows if r.info.role == "candidate" and r.info.file_name not in excluded),
                     key=lambda r: -sign * r.metrics[config.primary].mean)
    ranked = sorted(by_mean, key=lambda r: r.info.file_name != recommendation.checkpoint)  # stable: by mean after
    chosen = []
    for r in ranked[:config.strip_candidates]:
        rank = f"#{by_mean.index(r) + 1} by mean {config.primary}"
        chosen.append((r, f"recommended, {rank}" if r.info.file_name == recommendation.checkpoint else rank))
    chosen += [(r, "reference") for r in rows if r.info.role == "base"]
    if not chosen or config.strip_images == 0:
        return ()
    wanted = {(r.info.sha256, r.setting) for r, _ in chosen}
    cells = defaultdict(dict)
    order = []
    for cell in run_cells(store, run):
        if cell.prompt_role == config.prompt_role and (cell.checkpoint, cell.setting) in wanted:
            cells[cell.checkpoint][(cell.prompt_id, cell.seed)] = cell
            if (cell.prompt_id, cell.seed) not in order:
                order.append((cell.prompt_id, cell.seed))
    shared = [k for k in order if all(k in cells[r.info.sha256] for r, _ in chosen)] or order
    picked, seen = [], set()
    for prompt_id, seed in shared:  # one image per prompt first, then further seeds
        if prompt_id not in seen:
            seen.add(prompt_id)
            picked.append((prompt_id, seed))
    picked = (picked + [k for k in shared if k not in picked])[:config.strip_images]
    return tuple(Strip(r.info, r.setting, why, tuple(StripImage(c.image_path, c.prompt, c.seed) for k in picked
                                                  if (c := cells[r.info.sha256].get(k)) is not None))
                 for r, why in chosen)


def report_json(report: Report) -> dict:
    """The report as plain JSON data."""
    metrics = {m.name: m for m in report.metrics}

    def estimate(e: Estimate) -> dict:
        return {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n, "n_prompts": e.clusters}

    def setting(s: Setting | None) -> dict | None:
        return None if s is None else s.as_dict(report.names)

    def checkpoint(row: CheckpointRow) -> dict:
        i = row.info
        return {"name": i.file_name, "sha256": i.sha256, "epoch": i.epoch, "ema": i.ema, "role": i.role,
                "cfg": row.setting.cfg, "setting": setting(row.setting)}

    out = {"run": report.run, "primary": report.config.primary, "prompt_role": report.config.prompt_role,
           "confidence": report.config.bootstrap.confidence, "policy": report.config.judge.text,
           "settings": [setting(s) for s in report.settings], "notes": report.notes()}
    goal = report.config.goal
    out["goal"] = None if goal is None else {
        "name": goal.name, "fidelity": goal.fidelity, "following": goal.following, "pollution": goal.leak,
        "description": goal.description, "thresholds": dataclasses.asdict(report.config.analysis(None).flags)}
    for series, key in zip(SERIES, ("recommendation", "recommendation_raw", "recommendation_ema")):
        if series in report.recommendations:
            out[key] = _recommendation_json(report.recommendations[series], estimate, setting, report.config.judge)
    out["metrics"] = {m.name: {"level": m.level, "higher_is_better": m.higher_is_better,
                               "prompt_role": m.prompts or "all",
                               "description": m.description} for m in report.metrics}
    verdicts = {v.name: v for v in report.recommendations["overall"].verdicts}
    flags = {name: v.flags for name, v in verdicts.items()}
    out["checkpoints"] = [{**checkpoint(r), "flags": [f.name for f in flags.get(r.info.file_name, ())],
                           "flag_evidence": [f.as_dict() for f in flags.get(r.info.file_name, ())], "metrics": {
        name: {"cfg": r.setting.cfg, "setting": setting(r.setting), **estimate(e),
               "higher_is_better": metrics[name].higher_is_better,
               "prompt_role": metrics[name].prompts or "all"} for name, e in r.metrics.items()},
        "runner_up": None if r.runner_up is None else {"setting": setting(r.runner_up),
                                                       **estimate(r.by_setting[r.runner_up])},
        "by_setting": [{"setting": setting(s), **estimate(e)} for s, e in r.by_setting.items()]}
        for r in report.rows]
    out["set_metrics"] = [{**checkpoint(r), "metrics": {
        name: {"cfg": r.setting.cfg, "setting": setting(r.setting), "mean": v.mean, "ci_low": v.ci_low, "ci_high": v.ci_high, "std": v.std,
               "groups": v.groups, "images": v.images, "higher_is_better": metrics[name].higher_is_better}
        for name, v in r.set_metrics.items()}} for r in report.rows if r.set_metrics]
    out["portability"] = [portability_json(p, report.names) for p in report.portability]
    out["loss"] = [{"step": p.step, "epoch": p.epoch, "loss": p.loss} for p in report.loss]
    out["unscored"] = list(report.unscored)
    out["decisions"] = [{"checkpoint": d.checkpoint, "decided_by": d.decided_by, "reason": d.reason,
                         "overrides": d.overrides, "decided_at": d.decided_at.replace(tzinfo=timezone.utc).isoformat()} for d in report.decisions]
    return out


def _recommendation_json(rec: Recommendation, estimate, setting, judge: Judge) -> dict:
    return {"checkpoint": rec.checkpoint, "epoch": rec.epoch, "ema": rec.ema,
            "cfg": rec.setting.cfg if rec.setting else None, "setting": setting(rec.setting), "where": rec.where,
            "policy": judge.text, "best": rec.best, "best_setting": setting(rec.best_setting),
            "reasons": list(rec.reasons),
            "verdicts": [{"checkpoint": v.name, "epoch": v.epoch, "ema": v.ema,
                          "cfg": v.setting.cfg if v.setting else None, "setting": setting(v.setting),
                          "where": v.where, "status": v.status,
                          **estimate(v.mean), "difference": None if v.difference is None else estimate(v.difference),
                          "reason": v.reason, "flags": [f.name for f in v.flags],
                          "criteria": [{"objective": c.objective.label, "metric": c.objective.metric,
                                        "best": c.best, **estimate(c.mean), "ties_best": c.ties_best,
                                        "difference": None if c.difference is None else estimate(c.difference)}
                                       for c in v.criteria]} for v in rec.verdicts]}
