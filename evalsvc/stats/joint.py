"""Recommend a checkpoint on several objectives at once (a goal's fidelity and prompt following).

Rule, for candidates that carry no flag (a goal's constraints, such as memorisation, exclude):

1. For each objective k, the best is the candidate with the best mean on k; every candidate's paired
   difference to it (positive favouring the candidate) has an interval at `config.confidence`.
2. A candidate *ties the best on k* when that interval's upper end is at or above -margin_k.
3. When some candidates tie the best on every objective, the recommendation is the earliest of them: not
   significantly worse than the best on fidelity and prompt following together.
4. Otherwise the objectives trade off (the best on one is significantly worse on another). A candidate is
   significantly dominated when another is significantly better on one objective and not significantly
   worse on any; the rest form the statistical Pareto front. The recommendation is the front's member
   whose largest shortfall from the per-objective bests, in units of the spread of the candidates' means on
   that objective, is smallest (the balanced point of the trade-off); then the earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bootstrap import BootstrapConfig, Estimate, estimate_scores
from .compare import paired_difference
from .recommend import Candidate, Recommendation, Verdict, _oriented, _validate


@dataclass(frozen=True)
class Objective:
    """One thing a checkpoint is judged on: `label` ("fidelity") names the role, `metric` the score."""

    label: str
    metric: str
    higher_is_better: bool
    margin: float = 0.0


@dataclass(frozen=True)
class Criterion:
    """One candidate on one objective: its mean, its paired difference to that objective's best (positive
    favouring the candidate; None when excluded), and whether it ties the best."""

    objective: Objective
    best: str
    mean: Estimate
    difference: Estimate | None
    ties_best: bool

    @property
    def text(self) -> str:
        o = self.objective
        head = f"{o.label} ({o.metric}) mean {self.mean.mean:.4g}"
        if self.difference is None:
            return head
        d = self.difference
        verdict = "ties the best" if self.ties_best else "significantly worse than the best"
        return (f"{head}, {verdict} ({self.best}): difference {d.mean:+.4g} "
                f"(CI {d.ci_low:+.4g} to {d.ci_high:+.4g})")


def _scores(candidate: Candidate, index: int, objective: Objective):
    if index == 0:
        return candidate.scores
    if objective.label not in candidate.other_objectives:
        raise ValueError(f"candidate {candidate.name!r} has no scores for {objective.label} ({objective.metric})")
    return candidate.other_objectives[objective.label]


def recommend_jointly(candidates: Sequence[Candidate], objectives: Sequence[Objective],
                      config: BootstrapConfig = BootstrapConfig()) -> Recommendation:
    """Apply the module's rule; a candidate's first objective's scores are `scores`, the others' are in
    `other_objectives`, by objective label."""
    if not objectives:
        raise ValueError("no objectives to recommend on")
    _validate(candidates, 0.0)
    for o in objectives:
        _validate(candidates, o.margin)
    signs = [1.0 if o.higher_is_better else -1.0 for o in objectives]
    scores = [[_scores(c, k, o) for k, o in enumerate(objectives)] for c in candidates]
    means = [[estimate_scores(s, config) for s in row] for row in scores]
    eligible = [i for i, c in enumerate(candidates) if not c.flags]

    def earliness(i: int) -> tuple:
        epoch = candidates[i].epoch
        return (epoch is None, epoch or 0, i)

    if not eligible:
        return _nothing_eligible(candidates, means, objectives)
    bests = [min(eligible, key=lambda i: (-signs[k] * means[i][k].mean, earliness(i))) for k in range(len(objectives))]
    diffs = {i: [_oriented(paired_difference(scores[i][k], scores[b][k], config), signs[k])
                 for k, b in enumerate(bests)] for i in eligible}
    ties = {i: [diffs[i][k].ci_high >= -o.margin for k, o in enumerate(objectives)] for i in eligible}
    passing = [i for i in eligible if all(ties[i])]
    if passing:
        chosen, front = min(passing, key=earliness), passing
        rule = "the earliest candidate that ties the best on every objective"
    else:
        front = _front(eligible, scores, signs, config)
        spread = [max(means[i][k].mean for i in eligible) - min(means[i][k].mean for i in eligible) or 1.0
                  for k in range(len(objectives))]

        def shortfall(i: int) -> float:
            return max(signs[k] * (means[bests[k]][k].mean - means[i][k].mean) / spread[k]
                       for k in range(len(objectives)))

        chosen = min(front, key=lambda i: (shortfall(i), earliness(i)))
        rule = ("no candidate ties the best on every objective (they trade off); of the candidates no other is "
                "significantly better than on one objective without being worse on another, the one with the "
                "smallest largest shortfall from the bests")
    names = [c.name for c in candidates]
    verdicts = []
    for i, c in enumerate(candidates):
        criteria = tuple(Criterion(o, names[bests[k]], means[i][k], diffs[i][k] if i in diffs else None,
                                   bool(i in ties and ties[i][k])) for k, o in enumerate(objectives))
        if c.flags:
            status, reason = "excluded", "; ".join(f.text for f in c.flags) + "."
        else:
            status = "recommended" if i == chosen else "tied" if i in front else "worse"
            reason = "; ".join(cr.text for cr in criteria) + "."
        verdicts.append(Verdict(c.name, c.epoch, c.ema, c.setting, c.where, status, means[i][0],
                                diffs[i][0] if i in diffs else None, reason, c.flags, criteria))
    best_text = ", ".join(f"{o.label} ({o.metric}): {candidates[bests[k]].label}" for k, o in enumerate(objectives))
    c = candidates[chosen]
    reasons = [f"Best per objective: {best_text}.",
               f"Recommended {c.label}: {rule}; {verdicts[chosen].reason}"]
    reasons += [f"Not {candidates[i].label}: {verdicts[i].reason}" for i in sorted(eligible, key=earliness)
                if verdicts[i].status == "worse" and earliness(i) < earliness(chosen)]
    reasons += [f"Excluded {x.label}: {verdicts[i].reason}" for i, x in enumerate(candidates) if x.flags]
    return Recommendation(c.name, c.epoch, c.ema, c.setting, c.where, candidates[bests[0]].name,
                          candidates[bests[0]].setting, tuple(reasons), tuple(verdicts))


def _front(eligible: list[int], scores, signs: list[float], config: BootstrapConfig) -> list[int]:
    """The eligible candidates no other significantly dominates (better on one objective, worse on none)."""
    def dominates(j: int, i: int) -> bool:
        d = [_oriented(paired_difference(scores[j][k], scores[i][k], config), signs[k]) for k in range(len(signs))]
        return any(e.ci_low > 0 for e in d) and all(e.ci_high >= 0 for e in d)

    return [i for i in eligible if not any(dominates(j, i) for j in eligible if j != i)]


def _nothing_eligible(candidates: Sequence[Candidate], means, objectives) -> Recommendation:
    reasons = [f"No checkpoint can be recommended: every candidate ({len(candidates)}) is flagged."]
    verdicts = []
    for c, row in zip(candidates, means):
        why = "; ".join(f.text for f in c.flags) + "."
        reasons.append(f"Excluded {c.label}: {why}")
        criteria = tuple(Criterion(o, "", m, None, False) for o, m in zip(objectives, row))
        verdicts.append(Verdict(c.name, c.epoch, c.ema, c.setting, c.where, "excluded", row[0], None, why, c.flags,
                                criteria))
    return Recommendation(None, None, None, None, None, None, None, tuple(reasons), tuple(verdicts))
