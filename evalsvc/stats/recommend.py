"""Recommend a checkpoint: the earliest one not significantly worse than the best on the primary metric.

Rule, for candidates that carry no flag (a flag such as memorisation or overcooking excludes):

1. The best is the candidate with the best mean (ties: earlier epoch, then input order).
2. For every candidate c, d = paired_difference(c, best), oriented so that positive favours c
   (c - best when higher is better, best - c when lower is better), with its two-sided interval
   at `config.confidence`.
3. c is *not significantly worse* when d.ci_high >= -margin: the interval does not rule out that
   c is at most `margin` worse than the best. With margin 0 this is a one-sided test of "c is
   worse" at level (1 - confidence) / 2. The best itself always passes (d is exactly 0).
4. The recommendation is the passing candidate with the smallest epoch (no epoch sorts last),
   then the better mean, then input order.

This rule rewards lack of evidence: with few prompts more candidates pass and an earlier one is
chosen. `margin` (in the metric's units) lets a candidate that is provably worse by a negligible
amount still pass.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from ..setting import Setting
from .bootstrap import BootstrapConfig, Estimate, estimate_scores
from .compare import paired_difference
from .flag import Flag

STATUSES = ("recommended", "tied", "worse", "excluded")


@dataclass(frozen=True)
class Candidate:
    """One checkpoint at the setting it is judged at: its primary-metric scores per (prompt, seed) and any
    exclusion flags. `setting` is None when the scores span several settings (a robust judgement; then the
    keys are (prompt, (seed, setting))); `where` says in words where it was judged ("CFG 5, 20 steps")."""

    name: str
    epoch: int | None
    ema: bool
    setting: Setting | None
    scores: Mapping[tuple[Hashable, Hashable], float]
    flags: tuple[Flag, ...] = ()
    where: str = ""
    # the scores of a goal's further objectives at the same setting, by objective label (see `stats.joint`)
    other_objectives: Mapping[str, Mapping[tuple[Hashable, Hashable], float]] = field(default_factory=dict)

    def __post_init__(self):
        if self.epoch is not None and (isinstance(self.epoch, bool) or not isinstance(self.epoch, int)):
            raise ValueError(f"candidate {self.name!r}: epoch must be an integer or None, got {self.epoch!r}")
        if not isinstance(self.flags, tuple) or not all(isinstance(f, Flag) for f in self.flags):
            raise ValueError(f"candidate {self.name!r}: flags must be a tuple of Flag, got {self.flags!r}")
        if not self.scores:
            raise ValueError(f"candidate {self.name!r} has no scores")

    @property
    def label(self) -> str:
        epoch = "no epoch" if self.epoch is None else f"epoch {self.epoch}"
        return f"{self.name} ({epoch}, {'EMA' if self.ema else 'raw'}{', ' + self.where if self.where else ''})"


@dataclass(frozen=True)
class Verdict:
    """What the rule decided for one candidate: status is one of STATUSES; `difference` is against the best,
    positive favouring the candidate (None when excluded)."""

    name: str
    epoch: int | None
    ema: bool
    setting: Setting | None
    where: str
    status: str
    mean: Estimate
    difference: Estimate | None
    reason: str
    flags: tuple[Flag, ...] = ()  # what excluded it (status "excluded")
    criteria: tuple = ()  # per objective of a goal, its `stats.joint.Criterion` (empty for one primary metric)


@dataclass(frozen=True)
class Recommendation:
    """The chosen checkpoint (None when nothing is eligible), the best, and the reasons in sentences."""

    checkpoint: str | None
    epoch: int | None
    ema: bool | None
    setting: Setting | None
    where: str | None
    best: str | None
    best_setting: Setting | None
    reasons: tuple[str, ...]
    verdicts: tuple[Verdict, ...]


def recommend(candidates: Sequence[Candidate], higher_is_better: bool,
              config: BootstrapConfig = BootstrapConfig(), margin: float = 0.0) -> Recommendation:
    """Apply the module's rule to `candidates`; verdicts come back in input order."""
    _validate(candidates, margin)
    sign = 1.0 if higher_is_better else -1.0
    means = [estimate_scores(c.scores, config) for c in candidates]
    eligible = [i for i, c in enumerate(candidates) if not c.flags]
    if not eligible:
        return _all_flagged(candidates, means)

    def earliness(i: int) -> tuple:
        epoch = candidates[i].epoch
        return (epoch is None, epoch or 0, -sign * means[i].mean, i)

    best = min(eligible, key=lambda i: (-sign * means[i].mean, earliness(i)))
    diffs = {i: _oriented(paired_difference(candidates[i].scores, candidates[best].scores, config), sign)
             for i in eligible}
    passing = [i for i in eligible if diffs[i].ci_high >= -margin]
    chosen = min(passing, key=earliness)
    text = _Text(candidates, means, diffs, best, chosen, sign, margin, config.confidence)

    verdicts = []
    for i, c in enumerate(candidates):
        if c.flags:
            status = "excluded"
        elif i == chosen:
            status = "recommended"
        else:
            status = "tied" if i in passing else "worse"
        verdicts.append(Verdict(c.name, c.epoch, c.ema, c.setting, c.where, status, means[i], diffs.get(i),
                                text.verdict(i, status), c.flags))

    direction = "higher is better" if higher_is_better else "lower is better"
    reasons = [f"Best on the primary metric ({direction}): {candidates[best].label}, mean {text.mean(best)}.",
               text.verdict(chosen, "recommended")]
    reasons += [f"Not {candidates[i].label}: {text.verdict(i, 'worse')}"
                for i in sorted(eligible, key=earliness) if i not in passing and earliness(i) < earliness(chosen)]
    later = [candidates[i].label for i in sorted(passing, key=earliness) if i != chosen]
    if later:
        reasons.append(f"Also not significantly worse than the best, but not earlier: {', '.join(later)}.")
    reasons += [f"Excluded {c.label}: {text.verdict(i, 'excluded')}" for i, c in enumerate(candidates) if c.flags]
    c = candidates[chosen]
    return Recommendation(c.name, c.epoch, c.ema, c.setting, c.where, candidates[best].name, candidates[best].setting,
                          tuple(reasons), tuple(verdicts))


def _validate(candidates: Sequence[Candidate], margin: float) -> None:
    if not candidates:
        raise ValueError("no candidates to recommend from")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    seen = set()
    for c in candidates:
        if (c.name, c.setting) in seen:
            raise ValueError(f"candidate {c.name!r} at {c.where or 'one setting'} is given twice")
        seen.add((c.name, c.setting))


def _oriented(difference: Estimate, sign: float) -> Estimate:
    """The difference with its sign flipped when lower is better, so positive always means better."""
    if sign > 0:
        return difference
    return Estimate(-difference.mean, -difference.ci_high, -difference.ci_low, difference.n, difference.clusters)


def _all_flagged(candidates: Sequence[Candidate], means: list[Estimate]) -> Recommendation:
    reasons = [f"No checkpoint can be recommended: every candidate ({len(candidates)}) is flagged."]
    verdicts = []
    for c, mean in zip(candidates, means):
        why = "; ".join(f.text for f in c.flags) + "."
        reasons.append(f"Excluded {c.label}: {why}")
        verdicts.append(Verdict(c.name, c.epoch, c.ema, c.setting, c.where, "excluded", mean, None, why, c.flags))
    return Recommendation(None, None, None, None, None, None, None, tuple(reasons), tuple(verdicts))


@dataclass(frozen=True)
class _Text:
    """Sentences explaining the verdicts of one recommendation."""

    candidates: Sequence[Candidate]
    means: list[Estimate]
    diffs: dict[int, Estimate]
    best: int
    chosen: int
    sign: float
    margin: float
    confidence: float

    def _interval(self, e: Estimate, fmt: str) -> str:
        pct = f"{100 * self.confidence:g}%"
        return (f"{e.mean:{fmt}} ({pct} CI {e.ci_low:{fmt}} to {e.ci_high:{fmt}}; "
                f"{e.n} images over {e.clusters} prompts)")

    def mean(self, i: int) -> str:
        return self._interval(self.means[i], ".4g")

    def difference(self, i: int) -> str:
        return (f"paired difference to {self.candidates[self.best].name} {self._interval(self.diffs[i], '+.4g')}, "
                f"positive favouring {self.candidates[i].name}")

    def verdict(self, i: int, status: str) -> str:
        c, best = self.candidates[i], self.candidates[self.best]
        bound = "0" if self.margin == 0 else f"-{self.margin:g} (the margin)"
        if status == "excluded":
            note = ""
            if self.means[i].mean * self.sign > self.means[self.best].mean * self.sign:
                note = f" (its mean {self.mean(i)} would otherwise be the best)"
            return "; ".join(f.text for f in c.flags) + note + "."
        if status == "worse":
            return f"significantly worse than the best: {self.difference(i)}; the whole interval lies below {bound}."
        if status == "recommended" and i == self.best:
            earlier = [j for j in self.diffs if self._earlier(j, i)]
            tail = ("every earlier candidate is significantly worse" if earlier
                    else "no eligible candidate is earlier")
            return f"Recommended {c.label}: it has the best mean, and {tail}."
        if status == "recommended":
            return (f"Recommended {c.label}: the earliest candidate not significantly worse than the best, "
                    f"{best.label}; {self.difference(i)}; its upper end is at or above {bound}, "
                    f"so the data do not show it is worse{'' if self.margin == 0 else ' by more than the margin'}.")
        chosen = self.candidates[self.chosen]
        if i == self.best:
            return f"the best mean, but {chosen.label} is earlier and not significantly worse."
        why = ("is earlier" if c.epoch != chosen.epoch else "has the same epoch and a better mean")
        return (f"not significantly worse than the best ({self.difference(i)}), "
                f"but {chosen.name} {why} and is recommended.")

    def _earlier(self, j: int, i: int) -> bool:
        a, b = self.candidates[j].epoch, self.candidates[i].epoch
        return a is not None and (b is None or a < b)
