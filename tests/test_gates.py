"""Gates files: parsing and validation, per-slice rules, content hash, default gates, evaluation by slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evalsvc.errors import InputError
from evalsvc.regress.gates import Gates, default_gates, evaluate_gates, load_gates
from evalsvc.stats import BootstrapConfig
from evalsvc.stats.noninferiority import INFORMATIONAL, OVERALL, Rule

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gates.toml"
KNOWN = {"clip_t": True, "oracle": True, "aesthetic": True, "drift": False}
CONFIG = BootstrapConfig(resamples=500, seed=0)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return path


# --- parsing --------------------------------------------------------------------------------------


def test_example_file_parses_against_the_real_registry():
    from evalsvc.scoring.registry import scorer_registry

    known = {name: scorer.higher_is_better for name, scorer in scorer_registry().items()}
    gates = load_gates(EXAMPLE, known)
    assert (gates.alpha, gates.power, gates.gate_slices) == (0.05, 0.8, False)
    assert gates.metrics == {"clip_t": Rule(margin=0.01), "oracle": Rule(margin=0.02),
                             "aesthetic": Rule(informational=True)}
    assert gates.slices == {"purple": {"oracle": Rule(improve=0.0)}, "black": {"clip_t": Rule(margin=0.02)}}
    assert gates.source == str(EXAMPLE)


def test_slice_rules():
    gates = load_gates(EXAMPLE, KNOWN)
    overall = gates.for_slice(OVERALL)
    assert list(overall) == list(KNOWN)  # every known metric, in the known order
    assert overall == {"clip_t": Rule(margin=0.01), "oracle": Rule(margin=0.02),
                       "aesthetic": INFORMATIONAL, "drift": INFORMATIONAL}
    # a slice's table replaces the rule; the rest is reported but, without gate_slices, does not gate
    purple = gates.for_slice("purple")
    assert purple["oracle"] == Rule(improve=0.0)
    assert purple["clip_t"] == Rule(margin=0.01, informational=True)
    assert gates.for_slice("black")["clip_t"] == Rule(margin=0.02)
    assert gates.for_slice("black")["oracle"].informational
    assert all(rule.informational for rule in gates.for_slice("red").values())


def test_gate_slices_makes_the_top_level_rules_gate_every_slice(tmp_path):
    gates = load_gates(write(tmp_path, "gate_slices = true\n[metrics.clip_t]\nmargin = 0.01\n"
                                       "[metrics.aesthetic]\ninformational = true\n"
                                       "[slices.red.metrics.clip_t]\nmargin = 0.05\n"), KNOWN)
    assert gates.for_slice("blue")["clip_t"] == Rule(margin=0.01)
    assert gates.for_slice("red")["clip_t"] == Rule(margin=0.05)
    assert gates.for_slice("blue")["aesthetic"] == INFORMATIONAL


def test_an_empty_file_gates_nothing(tmp_path):
    gates = load_gates(write(tmp_path, "# nothing\n"), KNOWN)
    assert gates.metrics == {} and (gates.alpha, gates.power) == (0.05, 0.8)
    assert all(rule.informational for rule in gates.for_slice().values())


@pytest.mark.parametrize("text, key, problem", [
    ("[metrics.clip_tt]\nmargin = 0.01\n", "metrics.clip_tt", "unknown metric 'clip_tt' (known: clip_t, oracle"),
    ("[slices.red.metrics.fid]\nmargin = 1\n", "slices.red.metrics.fid", "unknown metric 'fid'"),
    ("[metrics.clip_t]\nmargin = -0.01\n", "metrics.clip_t.margin", "must be a finite number >= 0, got -0.01"),
    ("[metrics.clip_t]\nmargin = nan\n", "metrics.clip_t.margin", "finite number"),
    ("[metrics.clip_t]\nimprove = -1\n", "metrics.clip_t.improve", ">= 0"),
    ("[metrics.clip_t]\nmargin = '0.01'\n", "metrics.clip_t.margin", "got '0.01'"),
    ("[metrics.clip_t]\nmargin = true\n", "metrics.clip_t.margin", "got True"),
    ("[metrics.clip_t]\ninformational = 'yes'\n", "metrics.clip_t.informational", "must be true or false"),
    ("[metrics.clip_t]\nmragin = 0.01\n", "metrics.clip_t.mragin", "unknown key (expected one of margin, improve"),
    ("[metrics.clip_t]\n", "metrics.clip_t", "needs a margin or an improve (or informational = true)"),
    ("[metrics]\nclip_t = 0.01\n", "metrics.clip_t", "must be a table, got 0.01"),
    ("alpha = 1.5\n", "alpha", "strictly between 0 and 1, got 1.5"),
    ("alpha = 0\n", "alpha", "strictly between 0 and 1"),
    ("alpha = '0.05'\n", "alpha", "must be a number"),
    ("power = 1.0\n", "power", "strictly between 0 and 1"),
    ("gate_slices = 1\n", "gate_slices", "true or false"),
    ("alhpa = 0.05\n", "alhpa", "unknown key (expected one of alpha, power"),
    ("[slices.red]\nmargin = 0.01\n", "slices.red.margin", "unknown key (expected one of metrics)"),
    ("[slices]\nred = 1\n", "slices.red", "must be a table"),
    ('[slices."two words".metrics.clip_t]\nmargin = -1\n', 'slices."two words".metrics.clip_t.margin', ">= 0"),
])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as error:
        load_gates(path, KNOWN)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message
    assert "\n" not in message


def test_unreadable_or_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.toml: cannot read gates file"):
        load_gates(tmp_path / "missing.toml", KNOWN)
    path = write(tmp_path, "[metrics.clip_t\nmargin = 0.01\n")
    with pytest.raises(InputError, match=f"^{path}: invalid TOML"):
        load_gates(path, KNOWN)


def test_slices_are_checked_against_the_suite_tags_when_given(tmp_path):
    path = write(tmp_path, "[slices.purpel.metrics.oracle]\nimprove = 0.0\n")
    with pytest.raises(InputError, match=r"slices\.purpel: no prompt of the suite has the tag 'purpel' "
                                         r"\(tags: black, purple\)"):
        load_gates(path, KNOWN, known_slices={"purple", "black"})
    assert "purpel" in load_gates(path, KNOWN).slices  # not checked without the suite's tags


def test_content_hash_is_stable_and_follows_the_rules(tmp_path):
    first, again = load_gates(EXAMPLE, KNOWN), load_gates(EXAMPLE, KNOWN)
    assert first.content_hash() == again.content_hash()
    assert len(first.content_hash()) == 64
    # the same rules written differently (order, comments, 0.01 vs 1e-2) and read from elsewhere: same hash
    reordered = write(tmp_path, "[metrics.aesthetic]\ninformational = true\n[metrics.oracle]\nmargin = 2e-2\n"
                                "[metrics.clip_t]\nmargin = 1e-2 # comment\n[slices.black.metrics.clip_t]\n"
                                "margin = 0.02\n[slices.purple.metrics.oracle]\nimprove = 0\n")
    assert load_gates(reordered, KNOWN).content_hash() == first.content_hash()
    changed = write(tmp_path, EXAMPLE.read_text().replace("margin = 0.01", "margin = 0.011"))
    assert load_gates(changed, KNOWN).content_hash() != first.content_hash()
    looser = write(tmp_path, EXAMPLE.read_text().replace("gate_slices = false", "gate_slices = true"))
    assert load_gates(looser, KNOWN).content_hash() != first.content_hash()


def test_default_gates():
    gates = default_gates(KNOWN)
    assert gates.metrics == {"clip_t": Rule(margin=0.01)}
    assert gates.for_slice()["oracle"].informational and gates.for_slice()["drift"].informational
    assert not gates.gate_slices and (gates.alpha, gates.power) == (0.05, 0.8)
    assert gates.content_hash() == Gates(KNOWN, {"clip_t": Rule(margin=0.01)}).content_hash()
    with pytest.raises(InputError, match="need the clip_t metric"):
        default_gates({"oracle": True})


def test_gates_built_in_code_are_validated_too():
    with pytest.raises(InputError, match="gates: metrics.fid: unknown metric"):
        Gates(KNOWN, {"fid": Rule(margin=0.1)})
    with pytest.raises(InputError, match="alpha"):
        Gates(KNOWN, alpha=0.0)


# --- evaluation ------------------------------------------------------------------------------------

TAGS = {f"purple-{i}": ("purple", "black" if i < 3 else "white") for i in range(8)}
TAGS |= {f"red-{i}": ("red", "black" if i < 3 else "white") for i in range(8)}


def toy_scores(rng, shift: dict | None = None) -> tuple[dict, dict]:
    """clip_t and oracle for 16 prompts x 2 seeds; shift[(metric, tag)] is added to the candidate on that tag."""
    shift = shift or {}
    baseline, candidate = {}, {}
    for metric, level in (("clip_t", 0.3), ("oracle", 0.7)):
        baseline[metric] = {(p, s): level + float(rng.normal(0, 0.03)) for p in TAGS for s in range(2)}
        candidate[metric] = {
            (p, s): v + float(rng.normal(0, 0.002)) + sum(shift.get((metric, t), 0.0) for t in TAGS[p])
            for (p, s), v in baseline[metric].items()}
    return candidate, baseline


def test_evaluation_passes_an_unchanged_candidate_except_where_improvement_is_required():
    gates = load_gates(EXAMPLE, KNOWN)
    candidate, baseline = toy_scores(np.random.default_rng(0))
    evaluation = evaluate_gates(gates, candidate, baseline, TAGS, CONFIG)
    slices = list(dict.fromkeys(r.slice for r in evaluation.results))
    assert slices == [OVERALL, "black", "purple", "red", "white"]
    assert {(r.slice, r.metric) for r in evaluation.results} == {(s, m) for s in slices for m in ("clip_t", "oracle")}
    assert evaluation.gates_hash == gates.content_hash()
    # purple must be shown better on oracle: unchanged, it is not
    assert [(r.slice, r.metric) for r in evaluation.failures] == [("purple", "oracle")]
    assert evaluation.verdict == "regression"
    assert evaluation.lines()[0].startswith("oracle on slice 'purple' did not improve by more than 0.000")
    gated = {(r.slice, r.metric) for r in evaluation.results if not r.informational}
    assert gated == {(OVERALL, "clip_t"), (OVERALL, "oracle"), ("black", "clip_t"), ("purple", "oracle")}
    assert evaluate_gates(gates, candidate, baseline, TAGS, CONFIG) == evaluation  # deterministic


def test_evaluation_finds_a_regression_confined_to_one_slice():
    gates = load_gates(EXAMPLE, KNOWN)
    candidate, baseline = toy_scores(np.random.default_rng(1), {("oracle", "purple"): 0.1, ("clip_t", "black"): -0.08})
    evaluation = evaluate_gates(gates, candidate, baseline, TAGS, CONFIG)
    failed = {(r.slice, r.metric) for r in evaluation.failures}
    assert failed == {("black", "clip_t"), (OVERALL, "clip_t")}
    black = next(r for r in evaluation.failures if r.slice == "black")
    assert black.mean == pytest.approx(-0.08, abs=0.005) and black.prompts == 6
    line = black.explain()
    assert line.startswith("clip_t on slice 'black' regressed by 0.0797 (95% CI 0.0784 to 0.0810) "
                           "beyond the margin 0.0200 (Holm-adjusted p = 1)")
    assert "worst prompts: " in line and ("purple-" in line or "red-" in line)
    purple = next(r for r in evaluation.results if (r.slice, r.metric) == ("purple", "oracle"))
    assert purple.passed is True


def test_evaluation_refuses_gates_it_cannot_apply(tmp_path):
    candidate, baseline = toy_scores(np.random.default_rng(2))
    no_oracle = ({"clip_t": candidate["clip_t"]}, {"clip_t": baseline["clip_t"]})
    gates = load_gates(EXAMPLE, KNOWN)
    with pytest.raises(InputError, match=r"gates.toml: metrics.oracle: gated metric 'oracle' has no paired scores "
                                         r"overall"):
        evaluate_gates(gates, *no_oracle, TAGS, CONFIG)
    only_red = {p: tags for p, tags in TAGS.items() if p.startswith("red")}
    red_scores = [{m: {k: v for k, v in s.items() if k[0] in only_red} for m, s in side.items()}
                  for side in (candidate, baseline)]
    with pytest.raises(InputError, match=r"slices.purple: no scored prompt has the tag 'purple'"):
        evaluate_gates(gates, *red_scores, only_red, CONFIG)
    # gate_slices: a slice where a gated metric has no scores is skipped, not refused
    inherited = load_gates(write(tmp_path, "gate_slices = true\n[metrics.clip_t]\nmargin = 0.05\n"
                                           "[metrics.drift]\nmargin = 0.05\n"), KNOWN)
    drift = {"drift": {k: 0.1 for k in candidate["clip_t"] if k[0].startswith("red")}}
    evaluation = evaluate_gates(inherited, candidate | drift, baseline | drift, TAGS, CONFIG)
    assert ("purple", "drift") not in {(r.slice, r.metric) for r in evaluation.results}
    assert ("red", "drift") in {(r.slice, r.metric) for r in evaluation.results if not r.informational}
    with pytest.raises(ValueError, match="do not know: fid"):
        evaluate_gates(inherited, candidate | {"fid": {}}, baseline, TAGS, CONFIG)
