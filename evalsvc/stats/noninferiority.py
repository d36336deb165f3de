"""Paired non-inferiority and superiority gates: one-sided bootstrap tests, Holm's correction and power.

Every difference is oriented so that positive favours the candidate: Δ = candidate − baseline when
higher is better, baseline − candidate when lower is better. A gate's null hypothesis is that the
candidate is unacceptable, so a gate passes only on evidence:

- non-inferiority, H0: Δ ≤ −margin (the candidate is worse by at least the margin);
- superiority (when `improve` is set), H0: Δ ≤ improve (it is not better by more than `improve`).

With margin 0 the non-inferiority null is Δ ≤ 0, so an identical candidate (every difference 0)
fails: margin 0 demands proof that the candidate is strictly better. Give a positive margin to
tolerate no change.

p-value. The nested (prompt, then seed) cluster bootstrap of `bootstrap` is run on the oriented
differences with the same `BootstrapConfig` as the interval, so its B resample means θ*_b are the
very ones the interval is read from. For threshold t, p = (1 + #{b: θ*_b ≤ t}) / (B + 1): the share
of resamples at or below t, with the +1 correction so that p > 0. Hence p ≤ (1 − confidence) / 2
exactly when the two-sided interval's lower end exceeds t, up to the 1/B granularity. The p-value
is never below 2^−P for P prompts: the smallest p any sign-flip test over P independent prompts can
reach, which keeps a handful of prompts from passing a gate on an overconfident percentile bootstrap
(one prompt: p ≥ 0.5, so it never passes).

Holm. Within one family (the gated metrics of one slice) the p-values are Holm-adjusted (step-down)
and a gate passes when its adjusted p ≤ alpha, which bounds at alpha the chance that any gate of the
family passes wrongly.

Power. The smallest true difference from the threshold the suite detects with probability `power`
is (z_{1−a} + z_power) · SE, SE the standard deviation of the resample means, at a = alpha / k for a
family of k gates (Holm's first, strictest step) and a = alpha for informational metrics; it is
infinite when 2^−P > a (too few prompts to ever pass).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .bootstrap import BootstrapConfig, Estimate, bootstrap_means
from .compare import paired_difference

OVERALL = ""  # the slice holding every prompt
VERDICTS = ("pass", "regression")

Scores = Mapping[tuple[Hashable, Hashable], float]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """One metric's gate: tolerated loss `margin`, optional required gain `improve` (both in the metric's
    units, oriented by higher_is_better), or `informational` (reported, never gating)."""

    margin: float | None = None
    improve: float | None = None
    informational: bool = False

    def __post_init__(self):
        for name in ("margin", "improve"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, float(value))
        if not isinstance(self.informational, bool):
            raise ValueError(f"informational must be true or false, got {self.informational!r}")
        if not self.informational and self.margin is None and self.improve is None:
            raise ValueError("a gated metric needs a margin or an improve (or informational = true)")

    @property
    def threshold(self) -> float | None:
        """t of H0: Δ ≤ t — `improve` when set, else −margin; None when neither is given."""
        if self.improve is not None:
            return self.improve
        return None if self.margin is None else -self.margin


INFORMATIONAL = Rule(informational=True)


@dataclass(frozen=True)
class PairedTest:
    """The oriented paired difference: estimate and interval, bootstrap SE, the one-sided p-value for
    H0: Δ ≤ threshold (None without a threshold) and the prompts with the most negative mean Δ."""

    estimate: Estimate
    se: float
    threshold: float | None
    p_value: float | None
    worst: tuple[tuple[Hashable, float], ...]


def paired_test(candidate: Scores, baseline: Scores, higher_is_better: bool, threshold: float | None = None,
                config: BootstrapConfig = BootstrapConfig(), worst: int = 3) -> PairedTest:
    """Test H0: Δ ≤ threshold on the (prompt, seed) keys both mappings share (see the module doc)."""
    better, other = (candidate, baseline) if higher_is_better else (baseline, candidate)
    estimate = paired_difference(better, other, config)
    shared = [k for k in better if k in other]
    values = [better[k] - other[k] for k in shared]
    means = bootstrap_means(values, [k[0] for k in shared], [k[1] for k in shared], config)
    se = float(np.std(means, ddof=1)) if means.size > 1 else 0.0
    p_value = None
    if threshold is not None:
        if not _is_number(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        share = (1 + int(np.count_nonzero(means <= threshold))) / (means.size + 1)
        p_value = max(share, 0.5 ** estimate.clusters)
    return PairedTest(estimate, se, threshold, p_value, _worst_prompts(shared, values, worst))


def _worst_prompts(keys: list, values: list[float], count: int) -> tuple[tuple[Hashable, float], ...]:
    by_prompt: dict = {}
    for (prompt, _), value in zip(keys, values):
        by_prompt.setdefault(prompt, []).append(value)
    means = [(prompt, float(np.mean(v))) for prompt, v in by_prompt.items() if np.mean(v) < 0]
    return tuple(sorted(means, key=lambda item: (item[1], repr(item[0])))[:count])


def holm_adjusted(pvalues: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Holm's step-down adjusted p-values: the i-th smallest of k becomes max_{j≤i} min(1, (k−j+1)·p_(j))."""
    bad = {name: p for name, p in pvalues.items() if not (_is_number(p) and 0 <= p <= 1)}
    if bad:
        raise ValueError(f"p-values must be numbers in [0, 1], got {bad!r}")
    k = len(pvalues)
    adjusted, running = {}, 0.0
    for i, name in enumerate(sorted(pvalues, key=pvalues.__getitem__)):
        running = max(running, min(1.0, (k - i) * pvalues[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}


def holm(pvalues: Mapping[Hashable, float], alpha: float) -> dict[Hashable, bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level `alpha`."""
    _check_level("alpha", alpha)
    return {name: p <= alpha for name, p in holm_adjusted(pvalues).items()}


def detectable_difference(se: float, alpha: float, power: float) -> float:
    """(z_{1−alpha} + z_power) · se: the true distance from the threshold that a one-sided level-alpha test
    detects with probability `power`, for an estimate with standard error `se`."""
    _check_level("alpha", alpha)
    _check_level("power", power)
    if not (_is_number(se) and se >= 0):
        raise ValueError(f"se must be a number >= 0, got {se!r}")
    normal = NormalDist()
    return (normal.inv_cdf(1 - alpha) + normal.inv_cdf(power)) * se


def _check_level(name: str, value) -> None:
    if not (_is_number(value) and 0 < value < 1):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")


def _formatter(*values: float | None):
    """Format numbers with a shared number of decimals: three significant digits of the largest."""
    scale = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    decimals = 3 if scale == 0 else min(8, max(0, 2 - math.floor(math.log10(scale))))

    def fmt(x: float, sign: str = "") -> str:
        text = f"{x:{sign}.{decimals}f}"
        return text.replace("-", "+" if sign else "") if float(text) == 0 else text

    return fmt


@dataclass(frozen=True)
class GateResult:
    """One metric on one slice (OVERALL or a prompt tag). mean / ci_low / ci_high are Δ, positive
    favouring the candidate; passed is None for informational metrics; detectable is the power
    statement (module doc); worst lists (prompt, mean Δ) of the prompts that lost most."""

    metric: str
    slice: str
    higher_is_better: bool
    n: int
    prompts: int
    mean: float
    ci_low: float
    ci_high: float
    confidence: float
    margin: float | None
    improve: float | None
    informational: bool
    p_value: float | None
    p_adjusted: float | None
    passed: bool | None
    detectable: float
    worst: tuple[tuple[Hashable, float], ...] = ()
    setting: str = ""  # the setting it was judged at, in words ("" when there is one)

    @property
    def where(self) -> str:
        place = "overall" if self.slice == OVERALL else f"on slice {self.slice!r}"
        return f"{place} at {self.setting}" if self.setting else place

    @property
    def underpowered(self) -> bool:
        """A non-inferiority gate whose suite is too small: an unchanged candidate passes with
        probability below `power`."""
        return not self.informational and self.improve is None and self.detectable > (self.margin or 0.0)

    def explain(self) -> str:
        """One line: what was decided, by how much and where, e.g. "clip_t on slice 'holdout' regressed by
        0.0340 (95% CI 0.0200 to 0.0480) beyond the margin 0.0100 (Holm-adjusted p = 0.41); worst prompts: ..."."""
        f = _formatter(self.ci_low, self.ci_high, self.margin, self.improve)
        level = f"{self.confidence:.0%} CI"
        change = f"change {f(self.mean, '+')} ({level} {f(self.ci_low, '+')} to {f(self.ci_high, '+')})"
        p = "" if self.p_adjusted is None else f"Holm-adjusted p = {self.p_adjusted:.2g}"
        power = ("too few prompts to pass at this level" if math.isinf(self.detectable)
                 else f"this suite detects {f(self.detectable)} or more")
        name = f"{self.metric} {self.where}"
        if self.informational:
            line = f"{name} (informational): {change}, {self.n} pairs over {self.prompts} prompts"
        elif self.passed and self.improve is not None:
            line = f"{name} passed: improved by more than {f(self.improve)}, {change} ({p})"
        elif self.passed:
            line = f"{name} passed: within the margin {f(self.margin)}, {change} ({p})"
        elif self.improve is not None:
            line = f"{name} did not improve by more than {f(self.improve)}: {change} ({p}); {power}"
        elif -self.mean > self.margin:
            line = (f"{name} regressed by {f(-self.mean)} ({level} {f(-self.ci_high)} to {f(-self.ci_low)}) "
                    f"beyond the margin {f(self.margin)} ({p})")
            line += "" if -self.ci_high > self.margin else f"; {power}"
        else:
            line = f"{name} not shown within the margin {f(self.margin)}: {change} ({p}); {power}"
        if self.worst and not self.passed:
            line += "; worst prompts: " + ", ".join(f"{prompt} ({f(delta, '+')})" for prompt, delta in self.worst)
        return line


def gate_family(rules: Mapping[str, Rule], candidate: Mapping[str, Scores], baseline: Mapping[str, Scores],
                higher_is_better: Mapping[str, bool], alpha: float, power: float, slice: str = OVERALL,
                config: BootstrapConfig = BootstrapConfig()) -> tuple[GateResult, ...]:
    """Test every metric of `rules` that has paired scores, Holm-correcting the gated ones as one family.

    candidate[metric] and baseline[metric] map (prompt, seed) to a value; results follow `rules`' order.
    An informational metric without scores is skipped; a gated one raises ValueError.
    """
    _check_level("alpha", alpha)
    _check_level("power", power)
    tests = {}
    for metric, rule in rules.items():
        shared = bool(candidate.get(metric)) and any(k in baseline.get(metric, {}) for k in candidate[metric])
        if not shared:
            if rule.informational:
                continue
            raise ValueError(f"gated metric {metric!r} has no paired scores on slice {slice!r}")
        tests[metric] = paired_test(candidate[metric], baseline[metric], higher_is_better[metric], rule.threshold,
                                    config)
    gated = {m: t.p_value for m, t in tests.items() if not rules[m].informational}
    if gated and 1 / (config.resamples + 1) > alpha / len(gated):
        raise ValueError(f"{config.resamples} resamples cannot give a p-value below alpha / {len(gated)} = "
                         f"{alpha / len(gated):.2g}; use at least {math.ceil(len(gated) / alpha)} resamples")
    adjusted = holm_adjusted(gated)
    results = []
    for metric, test in tests.items():
        rule, e = rules[metric], test.estimate
        level = alpha / len(gated) if metric in gated else alpha
        detectable = math.inf if 0.5 ** e.clusters > level else detectable_difference(test.se, level, power)
        p_adj = adjusted.get(metric)
        results.append(GateResult(
            metric, slice, higher_is_better[metric], e.n, e.clusters, e.mean, e.ci_low, e.ci_high, config.confidence,
            rule.margin, rule.improve, rule.informational, test.p_value, p_adj,
            None if rule.informational else p_adj <= alpha, detectable, test.worst))
    return tuple(results)


@dataclass(frozen=True)
class Evaluation:
    """Every gate's result and the overall verdict: "regression" when any gate failed, else "pass"."""

    results: tuple[GateResult, ...]
    gates_hash: str = ""

    @property
    def failures(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if r.passed is False)

    @property
    def verdict(self) -> str:
        return "regression" if self.failures else "pass"

    def lines(self) -> list[str]:
        """One line per failed gate, in result order."""
        return [r.explain() for r in self.failures]
