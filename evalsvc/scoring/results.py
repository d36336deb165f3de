"""A run's stored scores as the statistics use them: leaderboard rows with CIs and the recommendation.

Every checkpoint is judged at its own best CFG (by the mean of the primary metric). Flags exclude a
checkpoint from the recommendation: memorisation (a share of its images closer to a training image
than training images are to each other) and overcooking (images far more saturated, clipped and
contrasty than the base's on the same prompts).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..stats import BootstrapConfig, Candidate, Estimate, best_cfg, estimate_scores, recommend
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


@dataclass(frozen=True)
class AnalysisConfig:
    primary: str = "clip_t"
    prompt_role: str | None = "target"  # the prompts the primary metric is judged on (None: all)
    ema: bool | None = None  # only EMA (True) or only raw (False) checkpoints; None: both
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    flags: FlagThresholds = field(default_factory=FlagThresholds)


@dataclass(frozen=True)
class LeaderboardRow:
    checkpoint: CheckpointInfo
    cfg: float
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
    """{(checkpoint sha, cfg): {(prompt_id, seed): value}} of an image-level metric."""
    rows = store.db.execute(
        "SELECT w.checkpoint, w.cfg, g.prompt_id, w.seed, s.value FROM scores s JOIN grid_cells g ON g.key = s.key "
        "AND g.run = ? JOIN work w ON w.key = s.key JOIN prompts p ON p.suite_hash = g.suite_hash "
        "AND p.prompt_id = g.prompt_id WHERE s.metric = ? AND s.value IS NOT NULL AND (? IS NULL OR p.role = ?)",
        [run, metric, prompt_role, prompt_role]).fetchall()
    out: dict[tuple[str, float], dict[tuple[str, int], float]] = defaultdict(dict)
    for sha, cfg, prompt_id, seed, value in rows:
        out[(sha, float(cfg))][(prompt_id, int(seed))] = float(value)
    return dict(out)


def stored_metrics(store, run: str) -> list[str]:
    """Image-level metrics with values for this run, in registry order."""
    present = {m for m, in store.db.execute(
        "SELECT DISTINCT s.metric FROM scores s JOIN grid_cells g ON g.key = s.key WHERE g.run = ?", [run]).fetchall()}
    return [name for name in scorer_registry() if name in present]


def leaderboard(store, run: str, metrics: list[str], config: AnalysisConfig = AnalysisConfig()):
    """Mean and nested-bootstrap CI per checkpoint x CFG x metric (on the configured prompts)."""
    checkpoints = run_checkpoints(store, run)
    rows = []
    for metric in metrics:
        for (sha, cfg), scores in sorted(metric_values(store, run, metric, config.prompt_role).items()):
            if sha in checkpoints:
                rows.append(LeaderboardRow(checkpoints[sha], cfg, metric, estimate_scores(scores, config.bootstrap)))
    return rows


def _flags(store, run: str, sha: str, cfg: float, thresholds: FlagThresholds) -> tuple[str, ...]:
    flags = []
    for metric, limit, text in (("memorised", thresholds.memorised_share, "memorisation: {:.0%} of images are "
                                 "near-copies of a training image (limit {:.0%})"),
                                ("overcook", thresholds.overcook, "overcooked: mean overcook z-score {:.2f} "
                                 "against the base (limit {:.2f})")):
        values = metric_values(store, run, metric).get((sha, cfg))
        if values:
            mean = sum(values.values()) / len(values)
            if mean > limit:
                flags.append(text.format(mean, limit))
    return tuple(flags)


def run_recommendation(store, run: str, config: AnalysisConfig = AnalysisConfig()) -> Recommendation:
    """The earliest candidate not significantly worse than the best on the primary metric, each at its best CFG."""
    registry = scorer_registry()
    higher = registry[config.primary].higher_is_better
    checkpoints = run_checkpoints(store, run)
    values = metric_values(store, run, config.primary, config.prompt_role)
    per_checkpoint: dict[str, dict[float, dict]] = defaultdict(dict)
    for (sha, cfg), scores in values.items():
        info = checkpoints.get(sha)
        if info is not None and info.role == "candidate" and config.ema in (None, info.ema):
            per_checkpoint[sha][cfg] = scores
    candidates = []
    for sha, by_cfg in per_checkpoint.items():
        means = {cfg: Estimate(sum(s.values()) / len(s), 0.0, 0.0, len(s), 0) for cfg, s in by_cfg.items()}
        cfg = best_cfg(means, higher)
        info = checkpoints[sha]
        candidates.append(Candidate(info.file_name, info.epoch, info.ema, cfg, by_cfg[cfg],
                                    _flags(store, run, sha, cfg, config.flags)))
    return recommend(candidates, higher, config.bootstrap)
