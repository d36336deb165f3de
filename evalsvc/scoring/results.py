"""A run's stored scores as the statistics use them: leaderboard rows with CIs and the recommendation.

Scores are never pooled across settings (`evalsvc.setting`); the judging policy (`stats.judge`) says at
which setting each checkpoint counts: by default its own best by the mean of the primary metric. Flags exclude a
checkpoint from the recommendation: memorisation (a share of its images closer to a training image
than training images are to each other) and overcooking (images far more saturated, clipped and
contrasty than the base's on the same prompts).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..setting import Setting, short_label
from ..stats import BootstrapConfig, Candidate, Estimate, estimate_scores, recommend
from ..stats.flag import Flag
from ..stats.judge import Judge, Judged, judge_checkpoints
from ..goals import Goal
from ..stats.joint import Objective, recommend_jointly
from .goal_flags import GoalEvidence, goal_flags, mean_at
from ..stats.recommend import Recommendation
from .registry import scorer_registry


@dataclass(frozen=True)
class CheckpointInfo:
    sha256: str
    file_name: str
    epoch: int | None
    ema: bool
    role: str  # "base" or "candidate"
    series: str = ""  # the training run that wrote it (kohya's ss_output_name); one line in a plot

    @property
    def label(self) -> str:
        if self.role == "base":
            return f"{self.file_name} (base)"
        return f"{self.file_name} ({'EMA' if self.ema else 'raw'}, epoch {self.epoch})"


@dataclass(frozen=True)
class FlagThresholds:
    """When a checkpoint is excluded from the recommendation."""

    memorised_share: float = 0.5  # share of images flagged as near-copies by `memorised`
    # mean `overcook` z-score against the base, in units of the base images' spread; on the demo (measured):
    # good epochs 0.3 at most, the LoRA trained at 30x the learning rate 1.9
    overcook: float = 1.0
    # with a goal (`evalsvc.goals`), also:
    # fidelity gain over the base below this share of the best unflagged candidate's gain: not trained enough
    undertrained_gain_share: float = 0.5
    # diversity across seeds on holdout prompts below this share of the base's: every image alike
    overfit_diversity_share: float = 0.6
    # the goal's pollution metric's gain over the base on holdout prompts above this share of its gain on
    # target prompts: what it learnt leaks where the prompt did not ask for it
    polluting_leak_share: float = 0.5


@dataclass(frozen=True)
class AnalysisConfig:
    """How a run is judged: on `primary` alone, or on a `goal`'s objectives and constraints (then `primary` is
    the goal's fidelity metric)."""

    primary: str = "clip_t"
    prompt_role: str | None = "target"  # the prompts the primary metric is judged on (None: all)
    ema: bool | None = None  # only EMA (True) or only raw (False) checkpoints; None: both
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    flags: FlagThresholds = field(default_factory=FlagThresholds)
    judge: Judge = field(default_factory=Judge)
    goal: Goal | None = None

    def __post_init__(self):
        if self.goal is not None and self.primary != self.goal.fidelity:
            object.__setattr__(self, "primary", self.goal.fidelity)


@dataclass(frozen=True)
class LeaderboardRow:
    checkpoint: CheckpointInfo
    setting: Setting
    metric: str
    estimate: Estimate


def run_checkpoints(store, run: str) -> dict[str, CheckpointInfo]:
    rows = store.db.execute(
        "SELECT c.sha256, c.file_name, c.epoch, c.ema, rc.role, coalesce(json_extract_string(c.metadata, "
        "'$.ss_output_name'), json_extract_string(c.metadata, '$.\"modelspec.title\"'), c.file_name) "
        "FROM run_checkpoints rc JOIN checkpoints c ON c.sha256 = rc.sha256 WHERE rc.run = ? "
        "ORDER BY rc.role, c.ema, c.epoch, c.file_name", [run]).fetchall()
    return {sha: CheckpointInfo(sha, name, epoch, bool(ema), role, series)
            for sha, name, epoch, ema, role, series in rows}


def metric_values(store, run: str, metric: str, prompt_role: str | None = None):
    """{(checkpoint sha, setting): {(prompt_id, seed): value}} of an image-level metric."""
    rows = store.db.execute(
        "SELECT w.checkpoint, g.setting, g.prompt_id, w.seed, s.value FROM scores s JOIN grid_cells g "
        "ON g.key = s.key AND g.run = ? JOIN work w ON w.key = s.key JOIN prompts p ON p.suite_hash = g.suite_hash "
        "AND p.prompt_id = g.prompt_id WHERE s.metric = ? AND s.value IS NOT NULL AND (? IS NULL OR p.role = ?)",
        [run, metric, prompt_role, prompt_role]).fetchall()
    settings: dict[str, Setting] = {}
    out: dict[tuple[str, Setting], dict[tuple[str, int], float]] = defaultdict(dict)
    for sha, key, prompt_id, seed, value in rows:
        setting = settings.setdefault(key, Setting.from_key(key))
        out[(sha, setting)][(prompt_id, int(seed))] = float(value)
    return dict(out)


def run_settings(store, run: str) -> list[Setting]:
    """Every setting the run has sampled images at, in `Setting.sort_key` order."""
    keys = [k for k, in store.db.execute("SELECT DISTINCT g.setting FROM grid_cells g JOIN samples s ON s.key = g.key "
                                         "WHERE g.run = ?", [run]).fetchall()]
    return sorted((Setting.from_key(k) for k in keys), key=Setting.sort_key)


def checkpoint_names(db) -> dict[str, str]:
    """sha256 -> file name of every checkpoint in the catalog, for naming bases and stacked LoRAs in settings."""
    return dict(db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())


def stored_metrics(store, run: str) -> list[str]:
    """Image-level metrics with values for this run, in registry order."""
    present = {m for m, in store.db.execute(
        "SELECT DISTINCT s.metric FROM scores s JOIN grid_cells g ON g.key = s.key WHERE g.run = ?", [run]).fetchall()}
    return [name for name in scorer_registry() if name in present]


def leaderboard(store, run: str, metrics: list[str], config: AnalysisConfig = AnalysisConfig()):
    """Mean and nested-bootstrap CI per checkpoint x setting x metric (on the configured prompts)."""
    checkpoints = run_checkpoints(store, run)
    rows = []
    for metric in metrics:
        values = metric_values(store, run, metric, config.prompt_role)
        for sha, setting in sorted(values, key=lambda k: (k[0], k[1].sort_key())):
            if sha in checkpoints:
                rows.append(LeaderboardRow(checkpoints[sha], setting, metric,
                                           estimate_scores(values[(sha, setting)], config.bootstrap)))
    return rows


FLAG_METRICS = ("memorised", "overcook")


def flag_reasons(means: dict[str, float], thresholds: FlagThresholds) -> tuple[Flag, ...]:
    """Why a checkpoint is excluded, from the mean of each of FLAG_METRICS over its images (absent: no values)."""
    flags = []
    for name, metric, limit, text in (
            ("memorised", "memorised", thresholds.memorised_share,
             "{:.0%} of images are near-copies of a training image (limit {:.0%})"),
            ("overcooked", "overcook", thresholds.overcook, "mean overcook z-score {:.2f} against the base "
                                                            "(limit {:.2f})")):
        if metric in means and means[metric] > limit:
            flags.append(Flag(name, metric, means[metric], limit, text.format(means[metric], limit)))
    return tuple(flags)


def _flags(flag_values: dict[str, dict], sha: str, settings: tuple[Setting, ...],
           thresholds: FlagThresholds) -> tuple[Flag, ...]:
    """Exclusion flags from the checkpoint's images at the settings it is judged at; `flag_values` holds
    `metric_values` of each of FLAG_METRICS, read once for all candidates."""
    means = {}
    for metric in FLAG_METRICS:
        values = [v for s in settings for v in flag_values[metric].get((sha, s), {}).values()]
        if values:
            means[metric] = sum(values) / len(values)
    return flag_reasons(means, thresholds)


def flagged_at_settings(db, run: str, thresholds: FlagThresholds = FlagThresholds()) -> dict[tuple[str, str], tuple]:
    """{(checkpoint sha, setting key): flags} of every checkpoint flagged by its images at one setting of `run`
    (a cursor is enough: the vote page asks per pair)."""
    rows = db.execute("SELECT w.checkpoint, g.setting, s.metric, avg(s.value) FROM scores s JOIN grid_cells g "
                      "ON g.key = s.key AND g.run = ? JOIN work w ON w.key = s.key WHERE s.value IS NOT NULL "
                      "AND s.metric IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL",
                      [run, list(FLAG_METRICS)]).fetchall()
    means: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for sha, setting, metric, mean in rows:
        means[(sha, setting)][metric] = float(mean)
    flagged = {player: flag_reasons(m, thresholds) for player, m in means.items()}
    return {player: flags for player, flags in flagged.items() if flags}


def candidate_values(store, run: str, config: AnalysisConfig) -> dict[str, dict[Setting, dict]]:
    """{candidate sha: {setting: primary-metric scores}} of the candidates the config selects."""
    checkpoints = run_checkpoints(store, run)
    per_checkpoint: dict[str, dict[Setting, dict]] = defaultdict(dict)
    for (sha, setting), scores in metric_values(store, run, config.primary, config.prompt_role).items():
        info = checkpoints.get(sha)
        if info is not None and info.role == "candidate" and config.ema in (None, info.ema):
            per_checkpoint[sha][setting] = scores
    return dict(per_checkpoint)


def where(judged: Judged, among: list[Setting], names: dict[str, str]) -> str:
    """Where a checkpoint was judged, in words, by the axes that vary in the run."""
    if judged.setting is not None:
        return short_label(judged.setting, among, names)
    worst, mean = judged.worst
    return f"mean over {len(judged.settings)} settings; worst {short_label(worst, among, names)} ({mean:.4g})"


def set_values(store, run: str, metric: str, prompt_role: str | None = None) -> dict[tuple[str, Setting], dict]:
    """{(checkpoint sha, setting): {prompt_id: value}} of a per-prompt set-level metric (diversity)."""
    rows = store.db.execute(
        "SELECT s.checkpoint, s.setting, s.prompt_id, s.value FROM set_scores s WHERE s.run = ? AND s.metric = ? "
        "AND s.value IS NOT NULL AND s.prompt_id <> '' AND (? IS NULL OR s.prompt_id IN (SELECT g.prompt_id FROM "
        "grid_cells g JOIN prompts p ON p.suite_hash = g.suite_hash AND p.prompt_id = g.prompt_id WHERE g.run = ? "
        "AND p.role = ?))", [run, metric, prompt_role, run, prompt_role]).fetchall()
    out: dict[tuple[str, Setting], dict] = defaultdict(dict)
    for sha, key, prompt_id, value in rows:
        out[(sha, Setting.from_key(key))][prompt_id] = float(value)
    return dict(out)


def _goal_evidence(store, run: str, goal: Goal, judged: dict[str, Judged]) -> dict[str, GoalEvidence]:
    """Each judged candidate's and the base's means, at the candidate's judged settings, of what the goal's
    flags read: fidelity and the pollution metric on target and holdout prompts, diversity on holdout ones."""
    bases = [sha for sha, info in run_checkpoints(store, run).items() if info.role == "base"]
    wanted = {(goal.fidelity, "target"), (goal.leak, "target"), (goal.leak, "holdout")}
    values = {key: metric_values(store, run, *key) for key in wanted}
    values[(goal.diversity, "holdout")] = set_values(store, run, goal.diversity, "holdout")
    out = {}
    for sha, j in judged.items():
        means, base = {}, {}
        for key, by in values.items():
            mine = mean_at(by, sha, j.settings)
            theirs = next((m for b in bases if (m := mean_at(by, b, j.settings)) is not None), None)
            if mine is not None:
                means[key] = mine
            if theirs is not None:
                base[key] = theirs
        out[sha] = GoalEvidence(means, base)
    return out


def _candidate_flags(store, run: str, config: AnalysisConfig, judged: dict[str, Judged]) -> dict[str, tuple]:
    """Each judged candidate's flags: memorised and overcooked, and with a goal its constraints' flags."""
    flag_values = {metric: metric_values(store, run, metric) for metric in FLAG_METRICS}
    flags = {sha: _flags(flag_values, sha, j.settings, config.flags) for sha, j in judged.items()}
    if config.goal is None:
        return flags
    evidence = _goal_evidence(store, run, config.goal, judged)
    gains = [g for sha, e in evidence.items() if not flags[sha]
             and (g := e.gain(config.goal.fidelity, "target")) is not None]
    best_gain = max(gains, default=None)
    return {sha: flags[sha] + goal_flags(evidence[sha], config.goal, best_gain, config.flags) for sha in judged}


def _judged_scores(values: dict, sha: str, j: Judged) -> dict:
    """`metric_values`-shaped `values` of one checkpoint keyed as its judgement is (see `stats.judge`)."""
    if j.setting is not None:
        return values.get((sha, j.setting), {})
    return {(prompt, (seed, s.key)): v for s in j.settings for (prompt, seed), v in values.get((sha, s), {}).items()}


def judged_candidates(store, run: str, config: AnalysisConfig) -> tuple[dict[str, Judged], list[Candidate]]:
    """Each candidate's judged scores under the config's policy, and the candidates for `recommend` (with a goal
    that has a prompt-following metric, its scores at the same settings in `other_objectives`)."""
    higher = scorer_registry()[config.primary].higher_is_better
    checkpoints = run_checkpoints(store, run)
    names = checkpoint_names(store.db)
    per_checkpoint = candidate_values(store, run, config)
    judged = judge_checkpoints(config.judge, per_checkpoint, higher, names)
    among = sorted({s for by in per_checkpoint.values() for s in by}, key=Setting.sort_key)
    flags = _candidate_flags(store, run, config, judged)
    following = config.goal.following if config.goal else None
    follow_values = metric_values(store, run, following, config.prompt_role) if following else {}
    candidates = []
    for sha, j in judged.items():
        info = checkpoints[sha]
        other_objectives = {FOLLOWING: _judged_scores(follow_values, sha, j)} if following else {}
        if following and not other_objectives[FOLLOWING]:
            from ..errors import InputError

            raise InputError(f"run {run!r}: {info.file_name} has no {following} scores at the setting it is judged "
                             f"at; the {config.goal.name} goal needs them (score {following})")
        candidates.append(Candidate(info.file_name, info.epoch, info.ema, j.setting, j.scores, flags[sha],
                                    where(j, among, names), other_objectives))
    return judged, candidates


FIDELITY, FOLLOWING = "fidelity", "prompt following"


def goal_objectives(goal: Goal) -> tuple[Objective, ...]:
    """The goal's objectives, fidelity first."""
    registry = scorer_registry()
    metrics = [(FIDELITY, goal.fidelity)] + ([(FOLLOWING, goal.following)] if goal.following else [])
    return tuple(Objective(label, metric, registry[metric].higher_is_better) for label, metric in metrics)


def run_recommendation(store, run: str, config: AnalysisConfig = AnalysisConfig()) -> Recommendation:
    """The earliest candidate not significantly worse than the best on the primary metric (with a goal: on its
    fidelity and prompt following together, `stats.joint`), each judged at the setting the config's policy
    gives it."""
    higher = scorer_registry()[config.primary].higher_is_better
    _, candidates = judged_candidates(store, run, config)
    if not candidates:
        from ..errors import InputError

        raise InputError(f"run {run!r}: no candidate has {config.primary} scores at the setting "
                         f"--judge {config.judge.text} names")
    if config.goal is not None:
        return recommend_jointly(candidates, goal_objectives(config.goal), config.bootstrap)
    return recommend(candidates, higher, config.bootstrap)
