"""The flags a goal's constraints raise, read from a checkpoint's images against the base's at the same setting.

- undertrained: its fidelity gain over the base is below a share of the best unflagged candidate's gain;
- overfit: its diversity across seeds on holdout prompts is below a share of the base's (the same
  composition and detail in every image);
- polluting: the goal's pollution metric rises over the base on holdout prompts by more than a share of its
  rise on target prompts (what it learnt shows where the prompt did not ask for it).

Memorised and overcooked (`results.flag_reasons`) apply with or without a goal. A flag needs the base's
images at the checkpoint's setting; without them it is not raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..setting import Setting
from ..stats.flag import Flag


@dataclass(frozen=True)
class GoalEvidence:
    """Per-metric means of one checkpoint and of the base over the same settings, by prompt role."""

    means: dict[tuple[str, str], float]  # (metric, role) -> the candidate's mean
    base: dict[tuple[str, str], float]  # (metric, role) -> the base's mean at the same settings

    def gain(self, metric: str, role: str) -> float | None:
        key = (metric, role)
        if key not in self.means or key not in self.base:
            return None
        return self.means[key] - self.base[key]


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def mean_at(values: dict, sha: str, settings: tuple[Setting, ...]) -> float | None:
    """The mean of `metric_values`-shaped `values` of one checkpoint over the given settings."""
    return _mean(v for s in settings for v in values.get((sha, s), {}).values())


def goal_flags(evidence: GoalEvidence, goal, best_gain: float | None, thresholds) -> tuple[Flag, ...]:
    """The undertrained, overfit and polluting flags of one checkpoint (see the module's rules)."""
    flags = []
    gain = evidence.gain(goal.fidelity, "target")
    if gain is not None and best_gain is not None and best_gain > 0:
        share = gain / best_gain
        if share < thresholds.undertrained_gain_share:
            flags.append(Flag("undertrained", goal.fidelity, share, thresholds.undertrained_gain_share,
                              f"{goal.fidelity} gain over the base {gain:+.4g} is {share:.0%} of the best "
                              f"checkpoint's {best_gain:+.4g} (limit {thresholds.undertrained_gain_share:.0%})"))
    key = (goal.diversity, "holdout")
    mine, base = evidence.means.get(key), evidence.base.get(key)
    if mine is not None and base:
        share = mine / base
        if share < thresholds.overfit_diversity_share:
            flags.append(Flag("overfit", goal.diversity, share, thresholds.overfit_diversity_share,
                              f"{goal.diversity} across seeds on holdout prompts {mine:.4g} is {share:.0%} of the "
                              f"base's {base:.4g} (limit {thresholds.overfit_diversity_share:.0%})"))
    held, target = evidence.gain(goal.leak, "holdout"), evidence.gain(goal.leak, "target")
    if held is not None and target is not None and target > 0:
        share = held / target
        if share > thresholds.polluting_leak_share:
            flags.append(Flag("polluting", goal.leak, share, thresholds.polluting_leak_share,
                              f"{goal.leak} rises over the base by {held:+.4g} on holdout prompts, {share:.0%} of "
                              f"its rise on target prompts ({target:+.4g}; limit "
                              f"{thresholds.polluting_leak_share:.0%})"))
    return tuple(flags)
