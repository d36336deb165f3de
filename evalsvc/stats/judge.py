"""Judging policies: at which setting each checkpoint's scores count in a recommendation.

- `best`: each checkpoint at its own best setting by the mean of the primary metric (with the
  runner-up setting beside it). Checkpoints at different settings are paired on (prompt, seed).
- `at:AXIS=VALUE,...`: every checkpoint at one fixed setting; the axes not named must have one value.
- `robust`: every checkpoint over every setting that all of them were sampled at, paired on (prompt,
  seed, setting); its score is the mean over those settings, and its worst setting is named.
  `robust:AXIS=V1|V2,...` declares the usage range: only the settings with those values (the other
  axes free), e.g. `robust:base=toy-sd15|toy-sd15-dark` or `robust:steps=20|30`.

Scores never pool settings otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from ..errors import InputError
from ..setting import Setting, parse_pins, select, varying_axes
from .bootstrap import Estimate
from .compare import best_setting

POLICIES = ("best", "at", "robust")
Scores = Mapping[tuple[Hashable, Hashable], float]


@dataclass(frozen=True)
class Judge:
    policy: str = "best"
    pins: tuple[tuple[str, str], ...] = ()  # for `at`: (axis, value as written)

    @classmethod
    def parse(cls, text: str | None) -> "Judge":
        text = (text or "best").strip()
        if text in ("best", "robust"):
            return cls(text)
        if text.startswith("robust:"):
            pins = parse_pins(text[7:])
            if not pins:
                raise InputError("--judge robust: needs at least one AXIS=VALUE[|VALUE...], for example "
                                 "robust:steps=20|30")
            return cls("robust", tuple(pins.items()))
        if text.startswith("at:"):
            pins = parse_pins(text[3:])
            if not pins:
                raise InputError("--judge at: needs at least one AXIS=VALUE, for example at:steps=20,cfg=5")
            return cls("at", tuple(pins.items()))
        raise InputError(f"--judge must be best, robust[:AXIS=V|V...] or at:AXIS=VALUE[,AXIS=VALUE...], "
                         f"got {text!r}")

    @property
    def text(self) -> str:
        """The policy as written on the command line."""
        if self.pins:
            return f"{self.policy}:" + ",".join(f"{a}={v}" for a, v in self.pins)
        return self.policy

    def describe(self) -> str:
        pins = ", ".join(f"{a}={v}" for a, v in self.pins)
        return {"best": "each checkpoint at its own best setting",
                "robust": (f"each checkpoint over the settings with {pins} that all candidates were sampled at "
                           "(mean; worst named)" if pins else
                           "each checkpoint over every setting all candidates were sampled at (mean; worst named)"),
                "at": f"every checkpoint at {pins}"}[self.policy]


@dataclass(frozen=True)
class Judged:
    """One checkpoint's scores under a policy."""

    setting: Setting | None  # None: a robust judgement over `settings`
    scores: dict
    settings: tuple[Setting, ...]  # the settings the scores come from
    runner_up: Setting | None = None  # under `best`: the second-best setting
    worst: tuple[Setting, float] | None = None  # under `robust`: the worst setting and its mean


def _mean(scores: Scores) -> float:
    return sum(scores.values()) / len(scores)


def pick_best(by_setting: Mapping[Setting, Scores], higher_is_better: bool) -> tuple[Setting, Setting | None]:
    """A checkpoint's best setting and runner-up by the mean of its scores. Settings sampled on different prompts
    (a few settings on part of the suite) are compared on the (prompt, seed) cells all of them have, so a
    setting is not chosen for having easier prompts; without such cells, each on its own cells."""
    common = set.intersection(*(set(v) for v in by_setting.values()))
    means = {s: Estimate(_mean({k: v[k] for k in common} if common else v), 0.0, 0.0, len(v), 0)
             for s, v in by_setting.items()}
    best = best_setting(means, higher_is_better)
    # the runner-up is another set of images: a base model's row is the same images at every LoRA strength
    rest = {s: e for s, e in means.items() if s != best and by_setting[s] != by_setting[best]}
    return best, (best_setting(rest, higher_is_better) if rest else None)


def judged_settings(judge: Judge, available: list[Setting], names: Mapping[str, str] | None = None) -> list[Setting]:
    """The settings a policy looks at among `available` (the settings some candidate has)."""
    if not judge.pins:
        return available
    chosen = select(available, dict(judge.pins), names, what=f"--judge {judge.policy}:")
    if judge.policy == "robust":
        return chosen
    if len(chosen) > 1:
        axes = varying_axes(chosen)
        raise InputError(f"--judge {judge.text} leaves {len(chosen)} settings, which differ in "
                         f"{', '.join(axes)}; pin {' and '.join(axes)} too (values: "
                         + "; ".join(f"{a} " + ", ".join(sorted({s.value(a, names) for s in chosen})) for a in axes)
                         + ")")
    return chosen


def judge_checkpoints(judge: Judge, per_checkpoint: Mapping[str, Mapping[Setting, Scores]], higher_is_better: bool,
                      names: Mapping[str, str] | None = None) -> dict[str, Judged]:
    """Each checkpoint's scores under `judge`; a checkpoint without scores at the judged setting is left out."""
    available = sorted({s for by in per_checkpoint.values() for s in by}, key=Setting.sort_key)
    if not available:
        return {}
    if judge.policy == "at":
        (setting,) = judged_settings(judge, available, names)
        return {sha: Judged(setting, dict(by[setting]), (setting,)) for sha, by in per_checkpoint.items()
                if setting in by}
    if judge.policy == "best":
        out = {}
        for sha, by in per_checkpoint.items():
            best, runner_up = pick_best(by, higher_is_better)
            out[sha] = Judged(best, dict(by[best]), (best,), runner_up)
        return out
    shared = [s for s in judged_settings(judge, available, names) if all(s in by for by in per_checkpoint.values())]
    if not shared:
        raise InputError("--judge robust: no setting was sampled for every candidate; sample a common setting "
                         "or judge with best or at:")
    out = {}
    sign = 1.0 if higher_is_better else -1.0
    for sha, by in per_checkpoint.items():
        scores = {(prompt, (seed, s.key)): v for s in shared for (prompt, seed), v in by[s].items()}
        worst = min(shared, key=lambda s: sign * _mean(by[s]))
        out[sha] = Judged(None, scores, tuple(shared), worst=(worst, _mean(by[worst])))
    return out
