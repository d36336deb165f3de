"""A goal's constraints as flags: undertrained, overfit and polluting, each with its evidence and threshold."""

import pytest

from evalsvc.errors import InputError
from evalsvc.goals import GOALS, goal_named
from evalsvc.scoring.goal_flags import GoalEvidence, goal_flags
from evalsvc.scoring.results import FlagThresholds

STYLE = GOALS["style"]
LIMITS = FlagThresholds()


def _evidence(fidelity=0.30, base_fidelity=0.10, diversity=0.20, base_diversity=0.20, leak_holdout=0.10,
              base_leak_holdout=0.10):
    metric = STYLE.fidelity  # the style goal's fidelity and pollution metric are one
    return GoalEvidence(
        means={(metric, "target"): fidelity, (metric, "holdout"): leak_holdout,
               (STYLE.diversity, "holdout"): diversity},
        base={(metric, "target"): base_fidelity, (metric, "holdout"): base_leak_holdout,
              (STYLE.diversity, "holdout"): base_diversity})


def _names(evidence, best_gain=0.2):
    return [f.name for f in goal_flags(evidence, STYLE, best_gain, LIMITS)]


def test_a_good_checkpoint_carries_no_flag():
    assert _names(_evidence()) == []


def test_undertrained_is_a_small_share_of_the_best_gain():
    flags = goal_flags(_evidence(fidelity=0.15), STYLE, 0.2, LIMITS)  # gain 0.05 of the best's 0.2
    assert [f.name for f in flags] == ["undertrained"]
    assert flags[0].value == pytest.approx(0.25) and flags[0].threshold == 0.5
    assert "25% of the best checkpoint's +0.2 (limit 50%)" in flags[0].evidence
    assert _names(_evidence(fidelity=0.15), best_gain=None) == []  # nothing to compare with: no flag


def test_overfit_is_diversity_collapse_against_the_base():
    flags = goal_flags(_evidence(diversity=0.05), STYLE, 0.2, LIMITS)
    assert [f.name for f in flags] == ["overfit"] and flags[0].value == pytest.approx(0.25)
    assert "diversity_ssim across seeds on holdout prompts 0.05 is 25% of the base's 0.2 (limit 60%)" in \
        flags[0].evidence
    assert _names(_evidence(diversity=0.13)) == []  # 65% of the base's: within the limit


def test_polluting_is_the_holdout_rise_as_a_share_of_the_target_rise():
    flags = goal_flags(_evidence(leak_holdout=0.25), STYLE, 0.2, LIMITS)  # +0.15 on holdout, +0.2 on target
    assert [f.name for f in flags] == ["polluting"] and flags[0].value == pytest.approx(0.75)
    assert _names(_evidence(leak_holdout=0.15)) == []  # +0.05: a quarter of the target's rise
    missing_base = GoalEvidence(means=_evidence(leak_holdout=0.25).means, base={})
    assert _names(missing_base) == []  # no base images at this setting: nothing is claimed


def test_every_goal_names_registered_metrics_and_unknown_goals_are_refused():
    from evalsvc.scoring.registry import scorer_registry

    registry = scorer_registry()
    for goal in GOALS.values():
        assert all(m in registry for m in goal.metrics), goal
    with pytest.raises(InputError, match="unknown goal 'portrait' \\(known: concept, character, style\\)"):
        goal_named("portrait")
