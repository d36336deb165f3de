"""The goal-aware rule: fidelity and prompt following judged together (stats.joint)."""

import numpy as np
import pytest

from evalsvc.stats import BootstrapConfig, Candidate
from evalsvc.stats.flag import Flag
from evalsvc.stats.joint import Objective, recommend_jointly

FIDELITY = Objective("fidelity", "identity", True)
FOLLOWING = Objective("prompt following", "clip_t_untriggered", True)
CONFIG = BootstrapConfig(resamples=400, seed=0)


def _scores(mean: float, seed: int, noise: float = 0.02) -> dict:
    rng = np.random.default_rng(seed)
    return {(f"p{p}", s): mean + noise * rng.standard_normal() for p in range(12) for s in range(3)}


def _candidate(epoch: int, fidelity: float, following: float, flags=()) -> Candidate:
    return Candidate(f"e{epoch}", epoch, False, None, _scores(fidelity, epoch), tuple(flags),
                     other_objectives={"prompt following": _scores(following, 100 + epoch)})


def test_the_earliest_candidate_tying_the_best_on_both_objectives_is_recommended():
    candidates = [_candidate(1, 0.30, 0.80), _candidate(2, 0.60, 0.80), _candidate(3, 0.602, 0.80),
                  _candidate(4, 0.602, 0.50)]
    result = recommend_jointly(candidates, (FIDELITY, FOLLOWING), CONFIG)
    assert result.checkpoint == "e2"
    status = {v.name: v.status for v in result.verdicts}
    assert status == {"e1": "worse", "e2": "recommended", "e3": "tied", "e4": "worse"}
    e4 = next(v for v in result.verdicts if v.name == "e4")
    assert [c.ties_best for c in e4.criteria] == [True, False]  # as faithful as the best, but ignores prompts
    assert "prompt following (clip_t_untriggered)" in e4.reason and "significantly worse" in e4.reason
    assert any(r.startswith("Not e1") for r in result.reasons)


def test_when_the_objectives_trade_off_the_balanced_front_member_is_recommended():
    # fidelity rises with training while prompt following falls: nothing ties both bests
    candidates = [_candidate(1, 0.20, 0.90), _candidate(2, 0.50, 0.75), _candidate(3, 0.80, 0.40),
                  _candidate(4, 0.45, 0.70)]  # e4 is worse than e2 on both: dominated
    result = recommend_jointly(candidates, (FIDELITY, FOLLOWING), CONFIG)
    status = {v.name: v.status for v in result.verdicts}
    assert status == {"e1": "tied", "e2": "recommended", "e3": "tied", "e4": "worse"}
    assert "trade off" in result.reasons[1]


def test_flags_exclude_and_lower_is_better_objectives_are_oriented():
    flag = Flag("memorised", "memorised", 0.9, 0.5, "90% of images are near-copies of a training image (limit 50%)")
    lower = Objective("prompt following", "distance", False)
    candidates = [_candidate(1, 0.60, 0.50), _candidate(2, 0.62, 0.20), _candidate(3, 0.90, 0.10, [flag])]
    result = recommend_jointly(candidates, (FIDELITY, lower), CONFIG)
    assert result.checkpoint == "e2"  # lower distance is better: e2 ties the best on both
    e3 = next(v for v in result.verdicts if v.name == "e3")
    assert e3.status == "excluded" and "memorised" in e3.reason and e3.difference is None
    nothing = recommend_jointly([_candidate(1, 0.5, 0.5, [flag])], (FIDELITY, FOLLOWING), CONFIG)
    assert nothing.checkpoint is None and "every candidate (1) is flagged" in nothing.reasons[0]


def test_a_candidate_without_an_objectives_scores_is_refused():
    bare = Candidate("e1", 1, False, None, _scores(0.5, 1))
    with pytest.raises(ValueError, match="e1.*prompt following"):
        recommend_jointly([bare], (FIDELITY, FOLLOWING), CONFIG)
