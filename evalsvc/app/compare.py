"""Two checkpoints of a run side by side on one prompt and seed: their images, per-image metrics and paired deltas.

Both are shown at one setting (`evalsvc.setting`: CFG, steps, sampler, strength, base, ...), or each at its own
best setting (the best mean of the primary metric on its prompts, as the report chooses it). Every score shown
belongs to the image shown: deltas are B − A on the two images, and the paired mean difference with its
cluster-bootstrap interval is over every (prompt, seed) both checkpoints have at their two settings.
Each metric is paired on the prompts the report judges it on (`ReportConfig.metric_role`: the primary and
adherence metrics on target prompts, the others on all their prompts).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import escape

from ..errors import InputError
from ..report.model import ReportConfig
from ..setting import Setting, parse_pins, varying_axes
from ..stats import BootstrapConfig, Estimate, paired_difference
from ..stats.judge import Judge, judged_settings, pick_best


@dataclass(frozen=True)
class CompareRequest:
    run: str
    a: str  # checkpoint file name
    b: str
    prompt: str  # prompt id
    seed: int
    setting: str | None = None  # AXIS=VALUE pins naming one setting (`cfg=5,steps=20`); None: each side's best
    primary: str = "clip_t"  # falls back to the run's first stored metric when it has no values of this one
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)

    def __post_init__(self):
        if self.a == self.b:
            raise InputError(f"compare two different checkpoints, both are {self.a!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class Side:
    checkpoint: str  # file name
    label: str  # file name with weights and epoch
    setting: Setting
    where: str  # the setting in words, by the axes that vary in the run
    key: str
    image: str  # ab/<sha256>.png


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    higher_is_better: bool
    prompts: str | None  # the prompt role the paired difference is on (None: several)
    a: float | None  # the metric on A's image
    b: float | None
    paired: Estimate | None  # mean of B − A over the shared (prompt, seed); None when they share none

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Comparison:
    run: str
    prompt_id: str
    prompt: str
    seed: int
    primary: str | None
    best_setting: bool  # each side at its own best setting
    confidence: float  # of the paired intervals
    a: Side
    b: Side
    metrics: tuple[MetricDelta, ...]


@dataclass(frozen=True)
class CompareChoices:
    """What a comparison can be asked for in a run: checkpoint file names, prompt ids, seeds and settings
    (as the AXIS=VALUE pins `CompareRequest.setting` takes, over the axes that vary)."""

    checkpoints: tuple[str, ...]
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: tuple[str, ...]
    default_a: str | None  # the base, else the first checkpoint
    default_b: str | None  # the latest raw candidate of the run's main series


def compare_choices(store, run: str) -> CompareChoices:
    from ..scoring.results import checkpoint_names, run_checkpoints, run_settings

    infos = list(run_checkpoints(store, run).values())
    prompts = tuple(dict.fromkeys(p for p, _ in store.db.execute(
        "SELECT DISTINCT g.prompt_id, p.position FROM grid_cells g JOIN prompts p ON p.suite_hash = g.suite_hash "
        "AND p.prompt_id = g.prompt_id WHERE g.run = ? ORDER BY p.position, g.prompt_id", [run]).fetchall()))
    seeds = tuple(v for v, in store.db.execute(
        "SELECT DISTINCT w.seed FROM grid_cells g JOIN work w ON w.key = g.key WHERE g.run = ? ORDER BY 1",
        [run]).fetchall())
    settings = run_settings(store, run)
    axes = varying_axes(settings) or ("cfg",)
    names = checkpoint_names(store.db)
    candidates = [i for i in infos if i.role == "candidate"]
    size = Counter(i.series for i in candidates)  # the run's main series has the most checkpoints
    default_b = max(candidates, key=lambda i: (size[i.series], not i.ema, i.epoch or 0)).file_name if candidates else None
    default_a = next((i.file_name for i in infos if i.file_name != default_b), None)
    return CompareChoices(tuple(i.file_name for i in infos), prompts, tuple(int(s) for s in seeds),
                          tuple(s.pins(axes, names) for s in settings), default_a, default_b)


def checkpoint_best_setting(store, run: str, sha: str, config: ReportConfig) -> Setting:
    """The setting with the best mean of `config.primary` on its prompts for one checkpoint (the report's choice)."""
    from ..scoring.registry import scorer_registry
    from ..scoring.results import metric_values

    values = metric_values(store, run, config.primary, config.metric_role(config.primary))
    mine = {setting: v for (s, setting), v in values.items() if s == sha and v}
    if not mine:
        raise InputError(f"no {config.primary} scores for this checkpoint on {config.prompt_role} prompts: "
                         "choose a setting instead of the best")
    return pick_best(mine, scorer_registry()[config.primary].higher_is_better)[0]


def pinned_setting(store, run: str, pins: str, names: dict[str, str]) -> Setting:
    """The one setting of the run the AXIS=VALUE pins name (InputError naming the values that exist)."""
    from ..scoring.results import run_settings

    settings = run_settings(store, run)
    if not settings:
        raise InputError(f"run {run!r} has no sampled images")
    (setting,) = judged_settings(Judge("at", tuple(parse_pins(pins).items())), settings, names)
    return setting


def compare(store, request: CompareRequest) -> Comparison:
    """The comparison `request` asks for; InputError for unknown checkpoints or images that were not sampled."""
    from ..scoring.results import checkpoint_names, run_checkpoints, run_settings
    from .view import primary_metric

    infos = run_checkpoints(store, request.run)
    checkpoints = {i.file_name: i for i in infos.values()}
    names = checkpoint_names(store.db)
    for name in (request.a, request.b):
        if name not in checkpoints:
            raise InputError(f"run {request.run!r} has no checkpoint {name!r} "
                             f"(checkpoints: {', '.join(checkpoints) or 'none'})")
    primary = primary_metric(store, request.run, request.primary)
    config = ReportConfig(primary=primary or request.primary, bootstrap=request.bootstrap)
    pinned = pinned_setting(store, request.run, request.setting, names) if request.setting else None
    among = run_settings(store, request.run)
    sides = []
    for name in (request.a, request.b):
        info = checkpoints[name]
        if pinned is not None:
            setting = pinned
        elif primary is None:
            raise InputError(f"run {request.run!r} has no scores yet, so no best setting: choose a setting")
        else:
            setting = checkpoint_best_setting(store, request.run, info.sha256, config)
        sides.append(_side(store, request, info, setting, among, names))
    a, b = sides
    prompt, = store.db.execute("SELECT prompt FROM work WHERE key = ?", [a.key]).fetchone()
    return Comparison(request.run, request.prompt, prompt, request.seed, primary, pinned is None,
                      request.bootstrap.confidence, a, b,
                      _deltas(store, request, checkpoints[a.checkpoint].sha256, checkpoints[b.checkpoint].sha256,
                              a, b, config))


def _side(store, request: CompareRequest, info, setting: Setting, among: list[Setting], names) -> Side:
    from ..setting import short_label

    where = short_label(setting, among, names)
    row = store.db.execute(
        "SELECT g.key, s.image_path FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "WHERE g.run = ? AND w.checkpoint = ? AND g.prompt_id = ? AND w.seed = ? AND g.setting = ?",
        [request.run, info.sha256, request.prompt, request.seed, setting.key]).fetchone()
    if row is None:
        raise InputError(f"no sampled image of {info.file_name} for prompt {request.prompt!r}, seed {request.seed}, "
                         f"{where} in run {request.run!r}")
    return Side(info.file_name, info.label, setting, where, row[0], row[1])


def _deltas(store, request: CompareRequest, sha_a: str, sha_b: str, a: Side, b: Side,
            config: ReportConfig) -> tuple[MetricDelta, ...]:
    from ..scoring.registry import scorer_registry

    rows = store.db.execute(
        "SELECT s.metric, s.key, w.checkpoint, g.prompt_id, w.seed, s.value, p.role FROM scores s "
        "JOIN grid_cells g ON g.key = s.key AND g.run = ? JOIN work w ON w.key = s.key "
        "JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id "
        "WHERE s.value IS NOT NULL AND ((w.checkpoint = ? AND g.setting = ?) OR (w.checkpoint = ? AND g.setting = ?))",
        [request.run, sha_a, a.setting.key, sha_b, b.setting.key]).fetchall()
    values = defaultdict(lambda: ({}, {}))  # metric -> (A's, B's) {(prompt, seed): value} on the metric's prompts
    roles = defaultdict(set)  # metric -> the prompt roles of those values
    shown = defaultdict(dict)  # metric -> {"a"/"b": the shown image's value}
    for metric, key, sha, prompt_id, seed, value, role in rows:
        is_a, is_b = key == a.key, key == b.key  # the scores of exactly the images shown
        if is_a:
            shown[metric]["a"] = float(value)
        if is_b:
            shown[metric]["b"] = float(value)
        if config.metric_role(metric) in (None, role):
            if sha == sha_a:
                values[metric][0][(prompt_id, int(seed))] = float(value)
            if sha == sha_b:
                values[metric][1][(prompt_id, int(seed))] = float(value)
            roles[metric].add(role)
    out = []
    for name, scorer in scorer_registry().items():
        side_a, side_b = values.get(name, ({}, {}))
        shared = [k for k in side_a if k in side_b]
        if not shared and not shown.get(name):
            continue  # neither image has it and nothing to pair (drift: the base has none)
        paired = paired_difference(side_b, side_a, request.bootstrap) if shared else None
        prompts = config.metric_role(name) or (next(iter(roles[name])) if len(roles[name]) == 1 else None)
        out.append(MetricDelta(name, scorer.higher_is_better, prompts, shown[name].get("a"), shown[name].get("b"),
                               paired))
    return tuple(out)


def _fmt(value: float | None) -> str:
    return "–" if value is None else ("0" if abs(value) < 1e-12 else f"{value:.4g}")


def delta_rows(comparison: Comparison) -> list[list]:
    """One row per metric: metric (↑/↓), A, B, B − A on these images, paired mean B − A, its interval, pairs, prompts."""
    rows = []
    for m in comparison.metrics:
        p = m.paired
        rows.append([f"{m.metric} {'↑' if m.higher_is_better else '↓'}", _fmt(m.a), _fmt(m.b), _fmt(m.delta),
                     _fmt(None if p is None else p.mean), "–" if p is None else f"{_fmt(p.ci_low)} to {_fmt(p.ci_high)}",
                     0 if p is None else p.n, m.prompts or "all"])
    return rows


def delta_headers(confidence: float = 0.95) -> list[str]:
    return ["metric", "A", "B", "B − A (these images)", "paired mean B − A", f"{100 * confidence:g}% CI", "pairs",
            "prompts"]


def comparison_html(comparison: Comparison) -> str:
    """B over A with a slider: A left of the split, B right of it; beside them the two images side by side."""
    a, b = comparison.a, comparison.b
    src_a, src_b = f"/image/{escape(a.image)}", f"/image/{escape(b.image)}"
    return (f'<div class="evs-compare"><p><b>{escape(comparison.prompt)}</b> (seed {comparison.seed})</p>'
            '<div class="evs-views"><div class="evs-slide"><div class="evs-overlay">'
            f'<img class="evs-under" src="{src_a}" alt="A"><img class="evs-over" src="{src_b}" alt="B">'
            '<span class="evs-tag evs-tag-a">A</span><span class="evs-tag evs-tag-b">B</span></div>'
            '<input class="evs-split" type="range" min="0" max="100" value="50" '
            'aria-label="split: A on the left, B on the right"></div>'
            '<div class="evs-pair">'
            f'<figure><img src="{src_a}" alt="A"><figcaption>A: {escape(a.label)}, {escape(a.where)}</figcaption></figure>'
            f'<figure><img src="{src_b}" alt="B"><figcaption>B: {escape(b.label)}, {escape(b.where)}</figcaption></figure>'
            '</div></div></div>')


def comparison_summary(comparison: Comparison) -> str:
    """One Markdown line on how the settings were chosen and what the deltas mean."""
    how = (f"each at its own best setting by {comparison.primary}" if comparison.best_setting
           else f"both at {comparison.a.where}")
    return (f"A = **{comparison.a.label}** ({comparison.a.where}), B = **{comparison.b.label}** "
            f"({comparison.b.where}); {how}. Deltas are B − A; the paired mean is over every (prompt, seed) "
            f"both have, with a {100 * comparison.confidence:g}% cluster-bootstrap interval.")
