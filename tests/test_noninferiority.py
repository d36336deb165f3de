"""Non-inferiority gates: one-sided bootstrap p-values, Holm's correction, detectable differences, verdicts."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.stats import norm

from evalsvc.stats import BootstrapConfig, paired_difference
from evalsvc.stats.noninferiority import (OVERALL, Evaluation, Rule, detectable_difference, gate_family, holm,
                                          holm_adjusted, paired_test)

CONFIG = BootstrapConfig(resamples=1000, seed=3)
MARGIN = 0.01


def scores(n_prompts: int, n_seeds: int, rng, shift: float = 0.0, noise: float = 0.0, base=None) -> tuple[dict, dict]:
    """Baseline scores around 0.3 with prompt effects, and the candidate = baseline + shift + noise."""
    if base is None:
        effects = rng.normal(0.3, 0.03, n_prompts)
        base = {(f"p{p:02d}", s): float(effects[p] + rng.normal(0, 0.02)) for p in range(n_prompts)
                for s in range(n_seeds)}
    cand = {k: v + shift + float(rng.normal(0, noise)) for k, v in base.items()}
    return cand, base


def family(rules: dict, pairs: dict, higher_is_better: dict | None = None, alpha=0.05, power=0.8, config=CONFIG):
    higher_is_better = higher_is_better or dict.fromkeys(rules, True)
    candidate = {m: c for m, (c, _) in pairs.items()}
    baseline = {m: b for m, (_, b) in pairs.items()}
    return {r.metric: r for r in gate_family(rules, candidate, baseline, higher_is_better, alpha, power,
                                             OVERALL, config)}


# --- decisions ------------------------------------------------------------------------------------


def test_identical_candidate_passes_every_positive_margin_and_fails_margin_zero():
    rng = np.random.default_rng(0)
    same = scores(20, 3, rng)
    rules = {"a": Rule(margin=MARGIN), "b": Rule(margin=1e-9), "c": Rule(margin=0.0)}
    results = family(rules, dict.fromkeys(rules, same))
    assert results["a"].passed and results["b"].passed
    assert results["a"].mean == 0 and results["a"].ci_low == 0 and results["a"].ci_high == 0
    assert results["a"].p_value == pytest.approx(1 / (CONFIG.resamples + 1))
    # margin 0 is H0: Δ <= 0, "must be shown better": an identical candidate cannot reject it.
    assert results["c"].p_value == 1.0 and results["c"].passed is False
    assert "not shown within the margin 0.000: change +0.000 (95% CI +0.000 to +0.000)" in results["c"].explain()


def test_shift_of_three_margins_fails_and_says_by_how_much():
    rng = np.random.default_rng(1)
    cand, base = scores(20, 3, rng, shift=-3 * MARGIN, noise=0.002)
    result = family({"clip_t": Rule(margin=MARGIN)}, {"clip_t": (cand, base)})["clip_t"]
    assert result.passed is False
    assert result.ci_high < -MARGIN
    assert result.mean == pytest.approx(-3 * MARGIN, abs=0.002)
    line = result.explain()
    assert re.match(r"clip_t overall regressed by 0\.0(29|30|31)\d* \(95% CI 0\.0\d+ to 0\.0\d+\) ", line), line
    assert "beyond the margin 0.0100 (Holm-adjusted p = 1)" in line
    assert "detects" not in line  # the whole interval is beyond the margin: no power caveat


def test_lower_is_better_metric_is_oriented():
    rng = np.random.default_rng(2)
    cand, base = scores(20, 2, rng, shift=+3 * MARGIN, noise=0.002)  # drift went up: worse
    result = family({"drift": Rule(margin=MARGIN)}, {"drift": (cand, base)}, {"drift": False})["drift"]
    assert result.mean == pytest.approx(-3 * MARGIN, abs=0.002) and result.passed is False
    better = family({"drift": Rule(margin=MARGIN)}, {"drift": (base, cand)}, {"drift": False})["drift"]
    assert better.mean == pytest.approx(3 * MARGIN, abs=0.002) and better.passed is True


def test_superiority_needs_a_shown_improvement():
    rng = np.random.default_rng(3)
    improved = scores(20, 3, rng, shift=3 * MARGIN, noise=0.002)
    same = scores(20, 3, rng)
    rule = Rule(margin=MARGIN, improve=0.0)
    assert family({"oracle": rule}, {"oracle": improved})["oracle"].passed is True
    unchanged = family({"oracle": rule}, {"oracle": same})["oracle"]
    assert unchanged.passed is False and unchanged.p_value == 1.0
    assert "did not improve by more than 0.000" in unchanged.explain()
    # improve above the gain: not shown either
    assert family({"oracle": Rule(improve=5 * MARGIN)}, {"oracle": improved})["oracle"].passed is False


def test_small_noisy_suite_is_inconclusive_and_fails():
    rng = np.random.default_rng(4)
    cand, base = scores(6, 2, rng, shift=0.0, noise=10 * MARGIN)
    result = family({"clip_t": Rule(margin=MARGIN)}, {"clip_t": (cand, base)})["clip_t"]
    assert result.ci_low < -MARGIN < result.ci_high  # the interval cannot tell
    assert result.passed is False
    assert result.underpowered and result.detectable > MARGIN
    # the point estimate is beyond the margin, but the interval is not: the line says so, with the power
    assert re.match(r"clip_t overall regressed by 0\.0404 \(95% CI -0\.0192 to 0\.0936\) beyond the margin "
                    r"0\.0100 \(Holm-adjusted p = 0\.85\); this suite detects 0\.\d+ or more; worst prompts: p05",
                    result.explain())


@pytest.mark.parametrize("n_prompts", [1, 2, 4])
def test_a_few_prompts_cannot_pass_even_when_clean(n_prompts):
    """Every prompt better and no noise: the percentile bootstrap alone would say p = 1/(B+1)."""
    cand, base = scores(n_prompts, 4, np.random.default_rng(5), shift=2 * MARGIN)
    test = paired_test(cand, base, True, -MARGIN, CONFIG)
    assert test.p_value == 0.5 ** n_prompts
    result = family({"clip_t": Rule(margin=MARGIN)}, {"clip_t": (cand, base)})["clip_t"]
    assert result.passed is False and math.isinf(result.detectable)


def test_worst_prompts_are_named_in_the_failure_line():
    rng = np.random.default_rng(6)
    cand, base = scores(12, 2, rng, noise=0.001)
    for seed in range(2):
        cand[("p07", seed)] -= 0.5
        cand[("p03", seed)] -= 0.2
    result = family({"clip_t": Rule(margin=MARGIN)}, {"clip_t": (cand, base)})["clip_t"]
    assert [p for p, _ in result.worst][:2] == ["p07", "p03"]
    assert result.worst[0][1] == pytest.approx(-0.5, abs=0.005)
    assert re.search(r"worst prompts: p07 \(-0\.(499|500)\), p03 \(-0\.(199|200|201)\)", result.explain())


# --- p-value -----------------------------------------------------------------------------------------


def test_p_value_is_the_share_of_resamples_at_or_below_the_threshold_and_agrees_with_the_interval():
    rng = np.random.default_rng(7)
    cand, base = scores(15, 3, rng, shift=0.004, noise=0.01)
    estimate = paired_difference(cand, base, CONFIG)
    tail = (1 - CONFIG.confidence) / 2
    for threshold in np.linspace(estimate.ci_low - 0.01, estimate.ci_high, 25):
        test = paired_test(cand, base, True, float(threshold), CONFIG)
        assert test.estimate == estimate
        if abs(threshold - estimate.ci_low) > 1e-3:
            assert (test.p_value <= tail) == (estimate.ci_low > threshold), threshold
    # a threshold below every resample mean: p is the +1-corrected minimum
    assert paired_test(cand, base, True, -1.0, CONFIG).p_value == pytest.approx(1 / (CONFIG.resamples + 1))
    assert paired_test(cand, base, True, +1.0, CONFIG).p_value == 1.0


def test_one_sided_test_holds_its_level_at_the_boundary():
    """True Δ exactly -margin (H0 boundary): 300 simulated suites, the rejection rate stays near alpha."""
    rng = np.random.default_rng(8)
    config = BootstrapConfig(resamples=400, seed=0)
    n_prompts, n_seeds, alpha, margin = 20, 3, 0.05, 0.5
    rejected = 0
    for _ in range(300):
        d = -margin + rng.normal(0, 1, (n_prompts, 1)) + rng.normal(0, 1, (n_prompts, n_seeds))
        cand = {(p, s): float(d[p, s]) for p in range(n_prompts) for s in range(n_seeds)}
        rejected += paired_test(cand, dict.fromkeys(cand, 0.0), True, -margin, config).p_value <= alpha
    assert 0.01 <= rejected / 300 <= alpha + 0.04


# --- Holm ------------------------------------------------------------------------------------------


def step_down(pvalues: dict, alpha: float) -> dict:
    """Holm (1979) as written: reject the i-th smallest while p_(i) <= alpha / (k - i + 1), then stop."""
    ordered = sorted(pvalues, key=pvalues.get)
    rejected = dict.fromkeys(pvalues, False)
    for i, name in enumerate(ordered):
        if pvalues[name] > alpha / (len(ordered) - i):
            break
        rejected[name] = True
    return rejected


def test_holm_matches_r_p_adjust():
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm") == c(0.05, 0.08, 0.09, 0.09, 0.09)
    adjusted = holm_adjusted({"a": 0.01, "b": 0.02, "c": 0.03, "d": 0.04, "e": 0.05})
    assert adjusted == pytest.approx({"a": 0.05, "b": 0.08, "c": 0.09, "d": 0.09, "e": 0.09})
    # unsorted input, capped at 1: p.adjust(c(0.04, 0.005, 0.3, 0.01), "holm") == c(0.08, 0.02, 0.3, 0.03)
    adjusted = holm_adjusted({"x": 0.04, "y": 0.005, "z": 0.3, "w": 0.01})
    assert adjusted == pytest.approx({"x": 0.08, "y": 0.02, "z": 0.3, "w": 0.03})
    assert list(adjusted) == ["x", "y", "z", "w"]
    assert holm_adjusted({"only": 0.7, "big": 0.9}) == {"only": 1.0, "big": 1.0}
    assert holm({"a": 0.01, "b": 0.02, "c": 0.03, "d": 0.04, "e": 0.05}, 0.05) == {
        "a": True, "b": False, "c": False, "d": False, "e": False}


def test_holm_agrees_with_the_step_down_procedure():
    rng = np.random.default_rng(9)
    for trial in range(300):
        k = int(rng.integers(1, 8))
        p = {f"m{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.12, k) ** rng.uniform(0.5, 2))}
        if trial % 3 == 0:  # ties
            p[f"m{k}"] = p["m0"]
        for alpha in (0.01, 0.05, 0.1):
            assert holm(p, alpha) == step_down(p, alpha)


def test_holm_refuses_bad_p_values():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            holm_adjusted({"a": bad})


def test_gates_in_one_family_are_holm_adjusted():
    rng = np.random.default_rng(10)
    pairs = {"a": scores(20, 2, rng, shift=0.2 * MARGIN, noise=0.01), "b": scores(20, 2, rng, noise=0.001),
             "info": scores(20, 2, rng)}
    rules = {"a": Rule(margin=MARGIN), "b": Rule(margin=MARGIN), "info": Rule(margin=MARGIN, informational=True)}
    results = family(rules, pairs)
    expected = holm_adjusted({"a": results["a"].p_value, "b": results["b"].p_value})
    assert results["a"].p_adjusted == expected["a"] and results["b"].p_adjusted == expected["b"]
    assert results["info"].p_adjusted is None and results["info"].passed is None
    assert results["info"].p_value is not None  # still reported


def test_too_few_resamples_for_the_family_is_refused():
    rng = np.random.default_rng(11)
    rules = {f"m{i}": Rule(margin=MARGIN) for i in range(3)}
    pairs = {m: scores(10, 2, rng) for m in rules}
    with pytest.raises(ValueError, match="at least 60 resamples"):
        family(rules, pairs, config=BootstrapConfig(resamples=50))


# --- power -------------------------------------------------------------------------------------------


def test_detectable_difference_closed_form():
    assert detectable_difference(1.0, 0.05, 0.8) == pytest.approx(norm.ppf(0.95) + norm.ppf(0.8))
    assert detectable_difference(0.02, 0.01, 0.9) == pytest.approx(0.02 * (norm.ppf(0.99) + norm.ppf(0.9)))
    assert detectable_difference(0.0, 0.05, 0.8) == 0.0
    for bad in ({"alpha": 0.0}, {"power": 1.0}, {"se": -1.0}):
        with pytest.raises(ValueError):
            detectable_difference(**{"se": 1.0, "alpha": 0.05, "power": 0.8, **bad})


@pytest.mark.parametrize("n_prompts", [16, 64])
def test_detectable_difference_from_data_shrinks_like_one_over_root_n(n_prompts):
    """Differences ±1 (population sd 1), one seed per prompt: the bootstrap SE is 1 / sqrt(P)."""
    cand = {(p, 0): float((-1) ** p) for p in range(n_prompts)}
    base = dict.fromkeys(cand, 0.0)
    config = BootstrapConfig(resamples=4000, seed=1)
    result = family({"m": Rule(margin=MARGIN)}, {"m": (cand, base)}, config=config)["m"]
    z = norm.ppf(0.95) + norm.ppf(0.8)
    assert result.detectable == pytest.approx(z / math.sqrt(n_prompts), rel=0.05)


def test_detectable_difference_uses_the_bonferroni_level_for_a_family():
    rng = np.random.default_rng(12)
    pair = scores(30, 2, rng, noise=0.01)
    one = family({"a": Rule(margin=MARGIN)}, {"a": pair})["a"]
    three = family({m: Rule(margin=MARGIN) for m in "abc"}, dict.fromkeys("abc", pair))["a"]
    z1, z3 = norm.ppf(0.95) + norm.ppf(0.8), norm.ppf(1 - 0.05 / 3) + norm.ppf(0.8)
    assert three.detectable / one.detectable == pytest.approx(z3 / z1)


# --- determinism and verdicts --------------------------------------------------------------------


def test_same_inputs_give_identical_results_whatever_the_input_order():
    rng = np.random.default_rng(13)
    pairs = {"a": scores(10, 3, rng, shift=-0.005, noise=0.01), "b": scores(10, 3, rng, noise=0.01)}
    rules = {"a": Rule(margin=MARGIN), "b": Rule(margin=MARGIN, improve=0.0)}
    first, second = family(rules, pairs), family(rules, pairs)
    assert first == second
    shuffled = {m: (dict(reversed(list(c.items()))), dict(reversed(list(b.items())))) for m, (c, b) in pairs.items()}
    assert family(rules, shuffled) == first
    assert family(rules, pairs, config=BootstrapConfig(resamples=1000, seed=4))["a"].p_value != first["a"].p_value


def test_evaluation_verdict_and_lines():
    rng = np.random.default_rng(14)
    good, bad = scores(20, 2, rng, noise=0.001), scores(20, 2, rng, shift=-3 * MARGIN, noise=0.001)
    results = family({"a": Rule(margin=MARGIN), "b": Rule(margin=MARGIN), "c": Rule(informational=True)},
                     {"a": good, "b": bad, "c": bad})
    failing = Evaluation(tuple(results.values()), "hash")
    assert failing.verdict == "regression"
    assert [r.metric for r in failing.failures] == ["b"]
    assert len(failing.lines()) == 1 and failing.lines()[0].startswith("b overall regressed by")
    passing = Evaluation((results["a"], results["c"]))
    assert passing.verdict == "pass" and passing.lines() == []
    assert "(informational)" in results["c"].explain()
    line = results["a"].explain()
    assert re.match(r"a overall passed: within the margin 0\.0100, change [+-]0\.000\d \(95% CI ", line)


def test_gated_metric_without_pairs_is_refused():
    rng = np.random.default_rng(15)
    cand, base = scores(5, 2, rng)
    moved = {(p + "x", s): v for (p, s), v in base.items()}
    with pytest.raises(ValueError, match="no paired scores"):
        family({"a": Rule(margin=MARGIN)}, {"a": (cand, moved)})
    assert family({"a": Rule(informational=True)}, {"a": (cand, moved)}) == {}


@pytest.mark.parametrize("kwargs", [{}, {"margin": -0.1}, {"improve": -1.0}, {"margin": float("nan")},
                                    {"margin": True}, {"margin": 0.1, "informational": 1}])
def test_rule_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        Rule(**kwargs)


def test_rule_thresholds():
    assert Rule(margin=0.02).threshold == -0.02
    assert Rule(margin=0.02, improve=0.01).threshold == 0.01
    assert Rule(informational=True).threshold is None
    assert Rule(margin=0).threshold == 0.0
