"""Gates: which metrics decide a regression check, with what margin, overall and per prompt tag (slice).

A gates file is TOML; every key is optional:

    alpha = 0.05          # family-wise error rate of the gated metrics of one slice (Holm)
    power = 0.8           # for the reported smallest detectable change
    gate_slices = false   # true: the [metrics] rules also gate every prompt-tag slice
    settings = ["steps=20,cfg=5"]  # gate only at these settings of the grid (default: at every one)
    [metrics.clip_t]
    margin = 0.01         # the candidate may be at most this much worse (metric units, oriented)
    [metrics.oracle]
    improve = 0.0         # the candidate must be better by more than this
    [metrics.aesthetic]
    informational = true  # reported, never gates
    [slices.holdout.metrics.drift]
    margin = 0.05

- A metric table is a whole rule: `margin`, `improve`, `informational` (default false); a gated table
  needs a margin or an improve. Metrics the file does not name are informational.
- The overall slice uses [metrics]. A tag slice reports the same metrics, informational unless
  `gate_slices = true`; a [slices.TAG.metrics.NAME] table replaces that metric's rule on that slice.
- margin = 0 means "must be shown better": an identical candidate fails it (see stats.noninferiority).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field

from evalsvc.errors import InputError
from evalsvc.setting import parse_pins
from evalsvc.stats.bootstrap import BootstrapConfig
from evalsvc.stats.noninferiority import INFORMATIONAL, OVERALL, Evaluation, Rule, gate_family
from evalsvc.textfiles import read_toml

PRIMARY = "clip_t"
DEFAULT_MARGIN = 0.01  # clip_t is a cosine (about 0.2 to 0.35): 0.01 is roughly a 3% loss of prompt adherence

_TOP_KEYS = ("alpha", "power", "gate_slices", "description", "settings", "metrics", "slices")
_RULE_KEYS = ("margin", "improve", "informational")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(*parts: str) -> str:
    """A dotted TOML key, quoting the parts that are not bare keys."""
    return ".".join(p if _BARE.fullmatch(p) else json.dumps(p) for p in parts)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Gates:
    """Validated gates: `known` maps every metric that can be reported to its higher_is_better."""

    known: Mapping[str, bool] = field(compare=False)
    metrics: Mapping[str, Rule] = field(default_factory=dict)
    slices: Mapping[str, Mapping[str, Rule]] = field(default_factory=dict)
    alpha: float = 0.05
    power: float = 0.8
    gate_slices: bool = False
    settings: tuple[str, ...] = ()  # AXIS=VALUE pins of the settings that gate (empty: every setting)
    source: str = field(default="gates", compare=False)

    def __post_init__(self):
        for name in ("alpha", "power"):
            value = getattr(self, name)
            if not (_is_number(value) and 0 < value < 1):
                raise InputError(f"{self.source}: {name}: must be a number strictly between 0 and 1, got {value!r}")
        if not isinstance(self.gate_slices, bool):
            raise InputError(f"{self.source}: gate_slices: must be true or false, got {self.gate_slices!r}")
        scopes = [(("metrics",), self.metrics)]
        scopes += [(("slices", tag, "metrics"), rules) for tag, rules in self.slices.items()]
        for prefix, rules in scopes:
            for metric, rule in rules.items():
                if metric not in self.known:
                    raise InputError(f"{self.source}: {_key(*prefix, metric)}: unknown metric {metric!r} "
                                     f"(known: {', '.join(self.known)})")
                if not isinstance(rule, Rule):
                    raise InputError(f"{self.source}: {_key(*prefix, metric)}: expected a Rule, got {rule!r}")
        empty = [tag for tag in self.slices if not isinstance(tag, str) or not tag.strip()]
        if empty:
            raise InputError(f"{self.source}: slices: a slice must be a non-empty prompt tag, got {empty[0]!r}")

    def informational(self) -> "Gates":
        """These gates with every rule informational (for a setting the file does not gate at)."""
        def off(rules):
            return {m: dataclasses.replace(r, informational=True) for m, r in rules.items()}

        return dataclasses.replace(self, metrics=off(self.metrics),
                                   slices={tag: off(rules) for tag, rules in self.slices.items()})

    def for_slice(self, tag: str = OVERALL) -> dict[str, Rule]:
        """Every known metric's rule on this slice (OVERALL or a prompt tag), in `known` order."""
        rules = dict.fromkeys(self.known, INFORMATIONAL)
        for metric, rule in self.metrics.items():
            inherit = tag == OVERALL or self.gate_slices or rule.informational
            rules[metric] = rule if inherit else dataclasses.replace(rule, informational=True)
        if tag != OVERALL:
            rules.update(self.slices.get(tag, {}))
        return rules

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of alpha, power, gate_slices and every rule (not the source)."""
        def table(rules: Mapping[str, Rule]) -> dict:
            return {metric: dataclasses.asdict(rule) for metric, rule in rules.items()}

        content = {"alpha": self.alpha, "power": self.power, "gate_slices": self.gate_slices,
                   "metrics": table(self.metrics), "slices": {tag: table(r) for tag, r in self.slices.items()}}
        if self.settings:  # absent from older hashes: a file without it keeps its hash
            content["settings"] = list(self.settings)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def default_gates(known_metrics: Mapping[str, bool]) -> Gates:
    """The gates used without a file: clip_t (prompt adherence, the primary metric) gated with margin 0.01,
    every other metric informational, alpha 0.05, power 0.8, slices informational.

    Gating every metric at margin 0 would fail an unchanged candidate (margin 0 demands proof of improvement)
    and multiply the ways to fail; set-level and base-relative metrics are not paired regressions, and the
    preference scorers need optional weights. Give a gates file to gate more.
    """
    if PRIMARY not in known_metrics:
        raise InputError(f"default gates need the {PRIMARY} metric; give a gates file")
    return Gates(dict(known_metrics), {PRIMARY: Rule(margin=DEFAULT_MARGIN)}, source="default gates")


def load_gates(path, known_metrics: Mapping[str, bool], known_slices: Collection[str] | None = None) -> Gates:
    """Read and validate a gates file; `known_slices` (the suite's prompt tags), when given, are checked too.

    Every problem raises InputError naming the file and the key.
    """
    where = str(path)
    data, _ = read_toml(path, "gates file")
    _check_keys(where, (), data, _TOP_KEYS)
    for name in ("alpha", "power"):
        if name in data and not _is_number(data[name]):
            raise InputError(f"{where}: {name}: must be a number, got {data[name]!r}")
    if not isinstance(data.get("description", ""), str):
        raise InputError(f"{where}: description: must be a string, got {data['description']!r}")
    metrics = _rules(where, ("metrics",), data.get("metrics", {}), known_metrics)
    slices = {}
    for tag, table in _table(where, ("slices",), data.get("slices", {})).items():
        if known_slices is not None and tag not in known_slices:
            raise InputError(f"{where}: {_key('slices', tag)}: no prompt of the suite has the tag {tag!r} "
                             f"(tags: {', '.join(sorted(known_slices)) or 'none'})")
        _check_keys(where, ("slices", tag), _table(where, ("slices", tag), table), ("metrics",))
        slices[tag] = _rules(where, ("slices", tag, "metrics"), table.get("metrics", {}), known_metrics)
    settings = {name: data[name] for name in ("alpha", "power", "gate_slices") if name in data}
    at = data.get("settings", [])
    if not isinstance(at, list) or not all(isinstance(v, str) and v.strip() for v in at):
        raise InputError(f"{where}: settings: must be a list of AXIS=VALUE texts such as \"steps=20,cfg=5\", got {at!r}")
    for text in at:
        try:
            parse_pins(text)
        except InputError as exc:
            raise InputError(f"{where}: settings: {exc}") from None
    return Gates(dict(known_metrics), metrics, slices, source=where, settings=tuple(at), **settings)


def _table(where: str, key: tuple[str, ...], value) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where}: {_key(*key)}: must be a table, got {value!r}")
    return value


def _check_keys(where: str, key: tuple[str, ...], table: dict, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise InputError(f"{where}: {_key(*key, unknown[0])}: unknown key (expected one of {', '.join(allowed)})")


def _rules(where: str, prefix: tuple[str, ...], table, known_metrics: Mapping[str, bool]) -> dict[str, Rule]:
    """The {metric: Rule} of a [metrics] table, every problem naming its key."""
    rules = {}
    for metric, entry in _table(where, prefix, table).items():
        key = (*prefix, metric)
        if metric not in known_metrics:
            raise InputError(f"{where}: {_key(*key)}: unknown metric {metric!r} (known: {', '.join(known_metrics)})")
        _check_keys(where, key, _table(where, key, entry), _RULE_KEYS)
        for name in ("margin", "improve"):
            value = entry.get(name, 0)
            if not _is_number(value) or value != value or value < 0 or value == float("inf"):
                raise InputError(f"{where}: {_key(*key, name)}: must be a finite number >= 0, got {value!r}")
        if not isinstance(entry.get("informational", False), bool):
            raise InputError(f"{where}: {_key(*key, 'informational')}: must be true or false, "
                             f"got {entry['informational']!r}")
        try:
            rules[metric] = Rule(**entry)
        except ValueError as error:
            raise InputError(f"{where}: {_key(*key)}: {error}") from None
    return rules


def evaluate_gates(gates: Gates, candidate: Mapping[str, Mapping], baseline: Mapping[str, Mapping],
                   tags: Mapping[Hashable, Collection[str]], config: BootstrapConfig = BootstrapConfig()) -> Evaluation:
    """Every slice's gate family: OVERALL, then each prompt tag of the scored prompts (sorted).

    candidate[metric] and baseline[metric] map (prompt, seed) to a value; `tags` maps a prompt to its tags
    (a prompt it lacks has none). A gate the file sets (in [metrics] for OVERALL, in the slice's own table
    for a tag) with no paired scores raises InputError; one a slice only inherits (gate_slices) is skipped.
    """
    unknown = sorted((set(candidate) | set(baseline)) - set(gates.known))
    if unknown:
        raise ValueError(f"scores of metrics the gates do not know: {', '.join(unknown)}")
    prompts = {key[0] for scores in (*candidate.values(), *baseline.values()) for key in scores}
    present = {tag for p in prompts for tag in tags.get(p, ())}
    missing = sorted(set(gates.slices) - present)
    if missing:
        raise InputError(f"{gates.source}: {_key('slices', missing[0])}: no scored prompt has the tag {missing[0]!r}")
    results = []
    for tag in [OVERALL, *sorted(present)]:
        members = prompts if tag == OVERALL else {p for p in prompts if tag in tags.get(p, ())}
        cand = {m: {k: v for k, v in s.items() if k[0] in members} for m, s in candidate.items()}
        base = {m: {k: v for k, v in s.items() if k[0] in members} for m, s in baseline.items()}
        explicit = gates.metrics if tag == OVERALL else gates.slices.get(tag, {})
        rules = {}
        for metric, rule in gates.for_slice(tag).items():
            paired = any(k in base.get(metric, {}) for k in cand.get(metric, {}))
            if paired or rule.informational:
                rules[metric] = rule
            elif metric in explicit:
                key = _key("metrics", metric) if tag == OVERALL else _key("slices", tag, "metrics", metric)
                where = "overall" if tag == OVERALL else f"on slice {tag!r}"
                raise InputError(f"{gates.source}: {key}: gated metric {metric!r} has no paired scores {where}")
        results += gate_family(rules, cand, base, gates.known, gates.alpha, gates.power, tag, config)
    return Evaluation(tuple(results), gates.content_hash())
