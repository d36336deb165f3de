"""Statistics: nested cluster bootstrap, paired differences, best CFG, Pareto front, recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from evalsvc.stats.flag import Flag
from evalsvc.stats import (BootstrapConfig, Candidate, Estimate, best_setting, cluster_bootstrap, estimate_scores,
                           paired_difference, pareto_front, recommend)
from evalsvc.stats import bootstrap as bootstrap_module
from evalsvc.setting import Setting

AT7 = Setting(cfg=7.0, steps=20, sampler="euler", size=(64, 64))


def grid(n_prompts: int, n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and seed labels of a full n_prompts x n_seeds grid, prompt-major."""
    return np.repeat(np.arange(n_prompts), n_seeds), np.tile(np.arange(n_seeds), n_prompts)


def loop_interval(values, prompts, seeds, config: BootstrapConfig) -> np.ndarray:
    """A slow, plain-Python nested bootstrap following the draw protocol documented in the module."""
    table: dict = {}
    for p, _, v in sorted(zip(prompts, seeds, values)):
        table.setdefault(p, []).append(v)
    names = sorted(table)
    width = max(len(row) for row in table.values())
    rng = np.random.default_rng(config.seed)
    prompt_draws = rng.integers(0, len(names), size=(config.resamples, len(names)))
    uniforms = rng.random((config.resamples, len(names), width))
    means = []
    for b in range(config.resamples):
        total, count = 0.0, 0
        for j in range(len(names)):
            row = table[names[prompt_draws[b, j]]]
            for k in range(len(row)):
                total += row[int(uniforms[b, j, k] * len(row))]
                count += 1
        means.append(total / count)
    alpha = 1 - config.confidence
    return np.quantile(means, [alpha / 2, 1 - alpha / 2])


def unbalanced_sample():
    """Six string prompts with 1 to 5 seeds each, in shuffled input order."""
    rng = np.random.default_rng(7)
    rows = [(f"prompt {p}", s, float(rng.normal(p, 1.0))) for p in range(6) for s in range(1 + p % 5)]
    order = rng.permutation(len(rows))
    prompts, seeds, values = zip(*[rows[i] for i in order])
    return list(values), list(prompts), list(seeds)


# --- bootstrap -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"resamples": 2.5}, {"confidence": 1.0},
                                    {"confidence": 0.0}, {"seed": -1}])
def test_config_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        BootstrapConfig(**kwargs)


def test_interval_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(2024)
    prompts, seeds = grid(12, 4)
    true_mean, hits, sims = 3.0, 0, 200
    for k in range(sims):
        prompt_effect = rng.normal(0.0, 0.6, 12)
        values = true_mean + prompt_effect[prompts] + rng.normal(0.0, 1.0, prompts.size)
        e = cluster_bootstrap(values, prompts, seeds, BootstrapConfig(resamples=400, seed=k))
        hits += e.ci_low <= true_mean <= e.ci_high
    assert 0.90 <= hits / sims <= 0.99


def test_nested_interval_is_wider_than_iid_when_prompt_effects_dominate():
    rng = np.random.default_rng(5)
    prompts, seeds = grid(12, 4)
    values = rng.normal(0.0, 1.0, 12)[prompts] + rng.normal(0.0, 0.2, prompts.size)
    nested = cluster_bootstrap(values, prompts, seeds, BootstrapConfig(resamples=2000))
    iid_means = values[rng.integers(0, values.size, size=(2000, values.size))].mean(axis=1)
    iid_low, iid_high = np.quantile(iid_means, [0.025, 0.975])
    assert nested.ci_high - nested.ci_low > 1.5 * (iid_high - iid_low)


def test_matches_numpy_mean_and_loop_implementation():
    values, prompts, seeds = unbalanced_sample()
    config = BootstrapConfig(resamples=300, confidence=0.9, seed=11)
    e = cluster_bootstrap(values, prompts, seeds, config)
    assert e.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert (e.n, e.clusters) == (len(values), 6)
    assert [e.ci_low, e.ci_high] == pytest.approx(loop_interval(values, prompts, seeds, config), rel=1e-12)


def test_chunking_does_not_change_the_draws(monkeypatch):
    values, prompts, seeds = unbalanced_sample()
    config = BootstrapConfig(resamples=300, seed=3)
    whole = cluster_bootstrap(values, prompts, seeds, config)
    monkeypatch.setattr(bootstrap_module, "_CHUNK_CELLS", 7)
    assert cluster_bootstrap(values, prompts, seeds, config) == pytest.approx(whole)


def test_one_seed_per_prompt_agrees_with_scipy_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(9).gamma(2.0, 1.0, 40)
    ours = cluster_bootstrap(x, np.arange(40), np.zeros(40), BootstrapConfig(resamples=4000))
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile",
                          rng=np.random.default_rng(1)).confidence_interval
    width = ref.high - ref.low
    assert abs(ours.ci_low - ref.low) < 0.06 * width
    assert abs(ours.ci_high - ref.high) < 0.06 * width


def test_deterministic_and_independent_of_input_order():
    values, prompts, seeds = unbalanced_sample()
    config = BootstrapConfig(resamples=500, seed=4)
    first = cluster_bootstrap(values, prompts, seeds, config)
    assert cluster_bootstrap(values, prompts, seeds, config) == first
    reordered = cluster_bootstrap(values[::-1], prompts[::-1], seeds[::-1], config)
    assert (reordered.ci_low, reordered.ci_high) == (first.ci_low, first.ci_high)
    other = cluster_bootstrap(values, prompts, seeds, BootstrapConfig(resamples=500, seed=5))
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_one_prompt_takes_its_interval_from_the_seeds():
    values = [0.1, 0.5, 0.2, 0.9, 0.4]
    prompts, seeds = ["only"] * 5, list(range(5))
    config = BootstrapConfig(resamples=500)
    e = cluster_bootstrap(values, prompts, seeds, config)
    assert e.clusters == 1 and e.ci_low < e.mean < e.ci_high
    assert [e.ci_low, e.ci_high] == pytest.approx(loop_interval(values, prompts, seeds, config), rel=1e-12)


def test_one_observation_has_a_point_interval():
    assert cluster_bootstrap([0.7], ["p"], [1]) == Estimate(0.7, 0.7, 0.7, 1, 1)


@pytest.mark.parametrize("values, prompts, seeds, message", [
    ([], [], [], "no observations"),
    ([1.0, float("nan")], ["a", "b"], [0, 0], "NaN"),
    ([1.0, float("inf")], ["a", "b"], [0, 0], "infinite"),
    ([1.0, 2.0], ["a"], [0, 1], "differ in length"),
    ([1.0, 2.0], ["a", "a"], [0, 0], "more than once"),
])
def test_bad_input_is_refused_by_name(values, prompts, seeds, message):
    with pytest.raises(ValueError, match=message):
        cluster_bootstrap(values, prompts, seeds)


def test_estimate_scores_reads_prompt_seed_keys():
    scores = {("a", 0): 1.0, ("a", 1): 2.0, ("b", 0): 4.0}
    e = estimate_scores(scores, BootstrapConfig(resamples=200))
    assert (e.mean, e.n, e.clusters) == (pytest.approx(7 / 3), 3, 2)
    with pytest.raises(ValueError, match="pairs"):
        estimate_scores({"a": 1.0})


# --- paired differences and best CFG --------------------------------------------------------------


def offset_scores(offset: float, prompts: int = 10, seeds: int = 3) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    base = {(f"p{p}", s): float(rng.normal(p, 1.0)) for p in range(prompts) for s in range(seeds)}
    return {k: v + offset for k, v in base.items()}, base


def test_paired_difference_of_constant_offset_is_exact():
    a, b = offset_scores(0.1)
    d = paired_difference(a, b, BootstrapConfig(resamples=500))
    assert d.mean == pytest.approx(0.1, abs=1e-12)
    assert d.ci_high - d.ci_low == pytest.approx(0.0, abs=1e-12)
    assert paired_difference(b, a, BootstrapConfig(resamples=500)).mean == pytest.approx(-0.1, abs=1e-12)


def test_paired_difference_uses_only_shared_keys():
    a, b = offset_scores(0.1)
    a[("only in a", 0)] = 100.0
    b[("only in b", 0)] = -100.0
    d = paired_difference(a, b, BootstrapConfig(resamples=500))
    assert (d.n, d.clusters) == (30, 10)
    assert d.mean == pytest.approx(0.1, abs=1e-12) and d.ci_high == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError, match="no shared"):
        paired_difference({("x", 0): 1.0}, {("y", 0): 1.0})


def test_best_setting_breaks_exact_ties_towards_the_lower_value():
    def est(mean: float) -> Estimate:
        return Estimate(mean, mean - 1, mean + 1, 10, 5)

    def at(cfg: float, steps: int = 20) -> Setting:
        return Setting(cfg=cfg, steps=steps, sampler="euler", size=(64, 64))

    means = {at(3.0): est(0.2), at(7.0): est(0.5), at(5.0): est(0.5), at(9.0): est(0.1)}
    assert best_setting(means, higher_is_better=True) == at(5.0)
    assert best_setting(means, higher_is_better=False) == at(9.0)
    assert best_setting({at(7.5): est(1.0)}, higher_is_better=True) == at(7.5)
    assert best_setting({at(5.0, 30): est(0.5), at(5.0, 4): est(0.5)}, higher_is_better=True) == at(5.0, 4)
    with pytest.raises(ValueError):
        best_setting({}, higher_is_better=True)


# --- Pareto front ------------------------------------------------------------------------------


def test_pareto_front_with_mixed_directions_dominated_points_and_duplicates():
    # (fidelity up, editability up, drift down)
    points = {
        "ep1": (0.50, 0.90, 0.10),  # front: most editable, least drift
        "ep2": (0.60, 0.80, 0.20),  # front
        "ep3": (0.60, 0.80, 0.20),  # duplicate of ep2: neither dominates the other
        "ep4": (0.55, 0.70, 0.30),  # dominated by ep2
        "ep5": (0.90, 0.40, 0.50),  # front: best fidelity
        "ep6": (0.90, 0.40, 0.60),  # dominated by ep5 on drift only
    }
    assert pareto_front(points, (True, True, False)) == ["ep1", "ep2", "ep3", "ep5"]
    assert pareto_front(points, (True, True, True)) == ["ep1", "ep2", "ep3", "ep4", "ep6"]
    assert pareto_front({"b": (1.0,), "a": (2.0,), "c": (2.0,)}, (True,)) == ["a", "c"]
    assert pareto_front({}, (True,)) == []


def test_pareto_front_refuses_wrong_arity_and_nan():
    with pytest.raises(ValueError, match="objectives"):
        pareto_front({"a": (1.0, 2.0)}, (True,))
    with pytest.raises(ValueError, match="NaN"):
        pareto_front({"a": (float("nan"),)}, (True,))


# --- recommendation ----------------------------------------------------------------------------


def candidates(offsets: dict, noise: float = 0.05, flags: dict | None = None, sign: float = 1.0) -> list[Candidate]:
    """Checkpoints ep<k> on 20 shared prompts x 4 seeds; each one's mean is exactly its offset plus a constant."""
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0.0, 1.0, 20)
    out = []
    for epoch, offset in offsets.items():
        noise_draws = rng.normal(0.0, noise, (20, 4))
        noise_draws -= noise_draws.mean()
        scores = {(f"p{p}", s): sign * float(prompt_effect[p] + offset + noise_draws[p, s])
                  for p in range(20) for s in range(4)}
        out.append(Candidate(f"ep{epoch}", epoch, False, AT7, scores, (flags or {}).get(epoch, ())))
    return out


TIED_SERIES = {1: -0.5, 2: -0.2, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.005}
CONFIG = BootstrapConfig(resamples=1000)


def test_recommends_earliest_of_a_statistical_tie():
    rec = recommend(candidates(TIED_SERIES), higher_is_better=True, config=CONFIG)
    assert (rec.checkpoint, rec.epoch, rec.ema, rec.setting, rec.best) == ("ep3", 3, False, AT7, "ep7")
    status = {v.name: v.status for v in rec.verdicts}
    assert status == {"ep1": "worse", "ep2": "worse", "ep3": "recommended",
                      "ep4": "tied", "ep5": "tied", "ep6": "tied", "ep7": "tied"}
    chosen = next(v for v in rec.verdicts if v.name == "ep3")
    assert chosen.difference.ci_low < 0 <= chosen.difference.ci_high
    assert chosen.difference.mean == pytest.approx(-0.005)
    assert "ep7" in rec.reasons[0] and "Recommended ep3" in rec.reasons[1] and "paired difference" in rec.reasons[1]
    assert any(r.startswith("Not ep1") and "significantly worse" in r for r in rec.reasons)


def test_flagged_best_is_excluded_with_its_flag_in_the_reasons():
    flag = Flag("overcooked", "overcook", 0.93, 0.85, "colour saturation 0.93 > 0.85")
    offsets = {3: 0.0, 4: 0.001, 5: 0.002, 6: 0.003, 7: 0.5}
    rec = recommend(candidates(offsets, flags={7: (flag,)}), higher_is_better=True, config=CONFIG)
    assert (rec.checkpoint, rec.best) == ("ep3", "ep6")
    excluded = next(v for v in rec.verdicts if v.name == "ep7")
    assert excluded.status == "excluded" and flag.text in excluded.reason and "otherwise be the best" in excluded.reason
    assert excluded.flags == (flag,)
    assert any(r.startswith("Excluded ep7") and flag.text in r for r in rec.reasons)
    assert recommend(candidates(offsets), higher_is_better=True, config=CONFIG).checkpoint == "ep7"


def test_nothing_recommended_when_every_candidate_is_flagged():
    flags = {3: (Flag("memorised", "nearest_train", 0.97, 0.95, "nearest-train similarity 0.97 > 0.95"),),
             4: (Flag("overcooked", "overcook", 1.5, 1.0, "saturation"),)}
    rec = recommend(candidates({3: 0.0, 4: 0.1}, flags=flags), higher_is_better=True, config=CONFIG)
    assert (rec.checkpoint, rec.epoch, rec.best) == (None, None, None)
    assert "every candidate" in rec.reasons[0]
    assert any("nearest-train similarity 0.97" in r for r in rec.reasons)
    assert {v.status for v in rec.verdicts} == {"excluded"}


def test_lower_is_better_metric():
    lower = candidates(TIED_SERIES, sign=-1.0)
    rec = recommend(lower, higher_is_better=False, config=CONFIG)
    assert (rec.checkpoint, rec.best) == ("ep3", "ep7")
    assert next(v for v in rec.verdicts if v.name == "ep1").difference.mean == pytest.approx(-0.505)
    # Read with the wrong orientation, the same numbers make ep1 the best and the recommendation.
    assert recommend(lower, higher_is_better=True, config=CONFIG).checkpoint == "ep1"


def test_margin_tolerates_a_negligible_but_significant_loss():
    cands = candidates({1: -0.5, 2: -0.01, 3: 0.0, 4: 0.0}, noise=0.001)
    assert recommend(cands, higher_is_better=True, config=CONFIG).checkpoint == "ep3"
    rec = recommend(cands, higher_is_better=True, config=CONFIG, margin=0.02)
    assert rec.checkpoint == "ep2" and "margin" in rec.reasons[1]
    with pytest.raises(ValueError, match="margin"):
        recommend(cands, higher_is_better=True, margin=-0.1)


def test_ties_in_epoch_go_to_the_better_mean_and_no_epoch_sorts_last():
    raw, ema, final = candidates({3: 0.0, 30: 0.002, 99: 0.004})
    ema = Candidate("ep3-ema", 3, True, AT7, ema.scores)
    final = Candidate("final", None, False, AT7, final.scores)
    rec = recommend([raw, final, ema], higher_is_better=True, config=CONFIG)
    assert (rec.checkpoint, rec.ema, rec.best) == ("ep3-ema", True, "final")
    assert [v.status for v in rec.verdicts] == ["tied", "tied", "recommended"]
    alone = recommend([final, Candidate("ep2", 2, False, AT7, candidates({2: -0.5})[0].scores)],
                      higher_is_better=True, config=CONFIG)
    assert alone.checkpoint == "final"


def test_candidate_input_is_checked():
    scores = {("p", 0): 1.0}
    with pytest.raises(ValueError, match="flags"):
        Candidate("ep1", 1, False, AT7, scores, flags="memorised")
    with pytest.raises(ValueError, match="flags"):
        Candidate("ep1", 1, False, AT7, scores, flags=("memorised: 90% of images",))
    with pytest.raises(ValueError, match="flag name must be one of"):
        Flag("memorisation", "memorised", 0.9, 0.5, "90% of images")
    with pytest.raises(ValueError, match="no scores"):
        Candidate("ep1", 1, False, AT7, {})
    with pytest.raises(ValueError, match="twice"):
        recommend([Candidate("ep1", 1, False, AT7, scores)] * 2, higher_is_better=True)
    with pytest.raises(ValueError, match="no candidates"):
        recommend([], higher_is_better=True)
