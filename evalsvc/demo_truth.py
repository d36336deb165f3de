"""The demo's check against ground truth: does scoring choose and rank checkpoints as the toy world's oracle does?

- **Oracle's best set** of a series (raw or EMA): the candidates whose mean oracle score lies within the
  bootstrap CI of the best one's (mean >= the best's `ci_low`); the recommendation should be one of them.
- **Ranking agreement**: for every pair of checkpoints, the paired oracle difference on shared (prompt, seed)
  with its CI; where the CI excludes 0 the oracle has ordered the pair, and the metric must order it the same
  way. Pairs the oracle cannot separate are reported as ties and need no agreement.

Both read stored `oracle` scores, so they need `evalsvc score` to have run with the oracle scorer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .setting import Setting
from .scoring.results import AnalysisConfig, CheckpointInfo, metric_values, run_checkpoints, run_recommendation
from .stats import Estimate, estimate_scores, paired_difference
from .stats.recommend import Recommendation


@dataclass(frozen=True)
class BestSetCheck:
    """The recommendation of one series beside the oracle's best and its best set."""

    series: str
    recommended: CheckpointInfo
    recommended_oracle: Estimate
    oracle_best: CheckpointInfo
    oracle_best_estimate: Estimate
    best_set: tuple[CheckpointInfo, ...]
    recommendation: Recommendation

    @property
    def inside(self) -> bool:
        return self.recommended in self.best_set


@dataclass(frozen=True)
class PairOrder:
    """How the oracle and a metric order checkpoints `a` and `b` (differences are a - b, oriented so that
    positive means `a` is better)."""

    a: CheckpointInfo
    b: CheckpointInfo
    oracle: Estimate
    metric: Estimate

    @property
    def oracle_decides(self) -> bool:
        return self.oracle.ci_low > 0 or self.oracle.ci_high < 0

    @property
    def agrees(self) -> bool | None:
        """None when the oracle cannot separate the pair; else whether the metric's mean has the same sign."""
        if not self.oracle_decides:
            return None
        return (self.oracle.mean > 0) == (self.metric.mean > 0)


def _by_checkpoint(store, run: str, metric: str, prompt_role: str | None,
                   at: dict[str, Setting | None] | None = None) -> dict[str, dict]:
    """{sha: {(prompt, seed): value}} at the setting `at` names for each checkpoint (None: over all its settings,
    keyed (prompt, (seed, setting)) as a robust judgement pairs them), else at its first setting."""
    values = metric_values(store, run, metric, prompt_role)
    out: dict[str, dict] = {}
    for sha, setting in sorted(values, key=lambda k: (k[0], k[1].sort_key())):
        scores = values[(sha, setting)]
        if at is None:
            out.setdefault(sha, scores)
        elif sha in at and at[sha] is None:
            out.setdefault(sha, {}).update({(p, (seed, setting.key)): v for (p, seed), v in scores.items()})
        elif sha in at and at[sha] == setting:
            out[sha] = scores
    return out


def judged_at(store, run: str, recommendation: Recommendation) -> dict[str, Setting | None]:
    """{sha: the setting the recommendation judged the checkpoint at} (None: over several settings)."""
    by_name = {info.file_name: sha for sha, info in run_checkpoints(store, run).items()}
    return {by_name[v.name]: v.setting for v in recommendation.verdicts if v.name in by_name}


def best_set_check(store, run: str, config: AnalysisConfig) -> BestSetCheck:
    """The recommendation for `config` (its `ema` picks the series) against the oracle's best set."""
    checkpoints = run_checkpoints(store, run)
    recommendation = run_recommendation(store, run, config)
    oracle = _by_checkpoint(store, run, "oracle", config.prompt_role, judged_at(store, run, recommendation))
    pool = [info for sha, info in checkpoints.items() if info.role == "candidate" and sha in oracle
            and config.ema in (None, info.ema)]
    estimates = {info.sha256: estimate_scores(oracle[info.sha256], config.bootstrap) for info in pool}
    best = max(pool, key=lambda info: (estimates[info.sha256].mean, -(info.epoch or 0)))
    floor = estimates[best.sha256].ci_low
    chosen = next(info for info in pool if info.file_name == recommendation.checkpoint)
    series = "all" if config.ema is None else ("EMA" if config.ema else "raw")
    return BestSetCheck(series, chosen, estimates[chosen.sha256], best, estimates[best.sha256],
                        tuple(info for info in pool if estimates[info.sha256].mean >= floor), recommendation)


def pair_orders(store, run: str, names: list[str], metric: str, config: AnalysisConfig,
                at: dict[str, Setting | None] | None = None) -> list[PairOrder]:
    """Every pair of the checkpoints named `names`, ordered by the oracle and by `metric`, each checkpoint at the
    setting `at` gives it (default: its first)."""
    checkpoints = {info.file_name: info for info in run_checkpoints(store, run).values()}
    missing = [n for n in names if n not in checkpoints]
    if missing:
        raise ValueError(f"run {run!r} has no checkpoint named {', '.join(missing)}")
    higher = _higher_is_better(metric)
    oracle = _by_checkpoint(store, run, "oracle", config.prompt_role, at)
    values = _by_checkpoint(store, run, metric, config.prompt_role, at)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = checkpoints[a].sha256, checkpoints[b].sha256
            better_first = (values[sa], values[sb]) if higher else (values[sb], values[sa])
            metric_diff = paired_difference(*better_first, config.bootstrap)
            out.append(PairOrder(checkpoints[a], checkpoints[b],
                                 paired_difference(oracle[sa], oracle[sb], config.bootstrap), metric_diff))
    return out


def _higher_is_better(metric: str) -> bool:
    from .scoring.registry import scorer_registry

    return scorer_registry()[metric].higher_is_better
