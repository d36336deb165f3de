"""Prompt suites: our TOML format, kohya and OneTrainer imports, the registry and content hashes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from evalsvc.errors import InputError, SuiteError
from evalsvc.suites import PromptSpec, Suite, list_suites, load_suite
from evalsvc.suites.model import derived_seed
from evalsvc.suites.registry import builtin_suite_dirs

REPO_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def independent_seed(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


# --- model ---------------------------------------------------------------------------------


def test_suite_error_is_an_input_error():
    assert issubclass(SuiteError, InputError)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"id": ""}, "id"),
        ({"id": "has space"}, "id"),
        ({"text": "   "}, "text"),
        ({"role": "villain"}, "role"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"seed": True}, "seed"),
        ({"cfg": 0}, "cfg"),
        ({"cfg": float("nan")}, "cfg"),
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"width": 770}, "width"),
        ({"height": 56}, "height"),
        ({"tags": ["ok", ""]}, "tags"),
        ({"sampler": " "}, "sampler"),
    ],
)
def test_prompt_spec_refuses_nonsense(fields, field):
    with pytest.raises(SuiteError, match=field):
        PromptSpec(**{"id": "p", "text": "a cat", **fields})


def test_prompt_spec_normalises_equal_values():
    spec = PromptSpec(id="p", text="a cat", tags=["a", "b"], cfg=7, sampler=" Euler_A ")
    assert spec.tags == ("a", "b") and spec.cfg == 7.0 and isinstance(spec.cfg, float) and spec.sampler == "euler_a"
    assert spec == PromptSpec(id="p", text="a cat", tags=("a", "b"), cfg=7.0, sampler="euler_a")


def test_suite_refuses_empty_and_duplicate_ids():
    with pytest.raises(SuiteError, match=r"^x\.toml: suite has no prompts$"):
        Suite(name="x", prompts=(), source="x.toml")
    p = PromptSpec(id="p", text="a")
    with pytest.raises(SuiteError, match="duplicate prompt id 'p'"):
        Suite(name="x", prompts=(p, p))


def test_content_hash_covers_name_and_prompt_fields_only():
    prompts = (PromptSpec(id="a", text="a cat"), PromptSpec(id="b", text="a dog", seed=3))
    suite = Suite(name="s", prompts=prompts, source="one.toml", description="x")
    same = Suite(name="s", prompts=prompts, source="other.toml", description="y")
    assert re.fullmatch(r"[0-9a-f]{64}", suite.content_hash)
    assert suite.content_hash == same.content_hash
    assert Suite(name="t", prompts=prompts).content_hash != suite.content_hash
    for change in ({"text": "a cat!"}, {"negative": "x"}, {"seed": 4}, {"role": "holdout"}, {"tags": ("t",)}):
        changed = (PromptSpec(**{"id": "a", "text": "a cat", **change}), prompts[1])
        assert Suite(name="s", prompts=changed).content_hash != suite.content_hash, change
    assert Suite(name="s", prompts=prompts[::-1]).content_hash != suite.content_hash


def test_by_role():
    suite = Suite("s", (PromptSpec("a", "x"), PromptSpec("b", "y", role="holdout"), PromptSpec("c", "z")))
    assert [p.id for p in suite.by_role("target")] == ["a", "c"]
    assert [p.id for p in suite.by_role("holdout")] == ["b"]
    assert suite.by_role("reference") == ()
    with pytest.raises(SuiteError, match="role"):
        suite.by_role("nope")


def test_derived_seed_matches_an_independent_computation():
    for text in ("a cat", "masterpiece, 1girl", "ünïcode ✓"):
        assert derived_seed(text) == independent_seed(text)
        assert 0 <= derived_seed(text) < 2**32


# --- our TOML format -------------------------------------------------------------------------

GOOD_TOML = """
name = "mine"
description = "test suite"

[[prompts]]
id = "portrait-woman"
text = "photo of a woman"
negative = "lowres"
tags = ["person", "portrait"]
seed = 7
cfg = 6
steps = 20
sampler = "Euler_A"
width = 512
height = 768

[[prompts]]
id = "held"
text = "a bowl of fruit"
role = "holdout"
"""


def test_toml_suite_loads_every_field(tmp_path):
    suite = load_suite(str(write(tmp_path, "mine_file.toml", GOOD_TOML)))
    assert suite.name == "mine" and suite.description == "test suite"
    assert suite.source.endswith("mine_file.toml")
    first, second = suite.prompts
    assert first == PromptSpec(
        id="portrait-woman", text="photo of a woman", negative="lowres", tags=("person", "portrait"),
        seed=7, cfg=6.0, steps=20, sampler="euler_a", width=512, height=768,
    )
    assert second == PromptSpec(id="held", text="a bowl of fruit", role="holdout")


def test_toml_suite_name_defaults_to_file_stem(tmp_path):
    path = write(tmp_path, "stemmy.toml", '[[prompts]]\nid = "a"\ntext = "x"\n')
    assert load_suite(str(path)).name == "stemmy"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[prompts]]\nid = "a"\ntext = "x"\n\n[[prompts]]\nid = "b"\ntext = "y"\ncolour = "red"\n',
         r"bad\.toml:5: prompts\[1\]: unknown key 'colour'"),
        ('[[prompts]]\nid = "a"\ntext = "x"\n[[prompts]]\nid = "a"\ntext = "y"\n',
         r"bad\.toml: duplicate prompt id 'a'"),
        ('name = "e"\nprompts = []\n', r"bad\.toml: suite has no prompts"),
        ('[[prompts]]\nid = "a"\ntext = "x"\nseed = "7"\n', r"bad\.toml:1: prompts\[0\]: prompt 'a': seed"),
        ('[[prompts]]\nid = "a"\n', r"bad\.toml:1: prompts\[0\]: missing key 'text'"),
        ('colour = 1\n[[prompts]]\nid = "a"\ntext = "x"\n', r"bad\.toml: unknown top-level key 'colour'"),
        ('[[prompts]]\nid = "a"\ntext = "x\n', r"bad\.toml: invalid TOML: .*line 3"),
    ],
)
def test_toml_suite_errors_name_the_file(tmp_path, text, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(str(write(tmp_path, "bad.toml", text)))


def test_toml_file_that_is_no_suite(tmp_path):
    with pytest.raises(SuiteError, match=r"odd\.toml: neither a suite"):
        load_suite(str(write(tmp_path, "odd.toml", 'title = "x"\n')))


# --- kohya .txt ----------------------------------------------------------------------------

KOHYA_TXT = """# sample prompts for mychar

masterpiece, 1girl, red eyes --n lowres, bad hands --w 770 --h 768 --d 1 --l 7.5 --s 28 --ss euler_a
   # an indented comment
a castle on a hill
a castle on a hill --W 40 --H 1000 --L 5
"""


def test_kohya_txt_every_flag(tmp_path):
    suite = load_suite(str(write(tmp_path, "sample_prompts.txt", KOHYA_TXT)))
    assert suite.name == "sample_prompts"
    assert [p.id for p in suite.prompts] == ["line-3", "line-5", "line-6"]
    first = suite.prompts[0]
    assert first == PromptSpec(
        id="line-3", text="masterpiece, 1girl, red eyes", negative="lowres, bad hands",
        seed=1, cfg=7.5, steps=28, sampler="euler_a", width=768, height=768,
    )
    assert all(p.role == "target" and p.tags == () for p in suite.prompts)
    plain = suite.prompts[1]
    assert plain == PromptSpec(id="line-5", text="a castle on a hill", seed=independent_seed("a castle on a hill"))
    sizes = suite.prompts[2]
    assert (sizes.width, sizes.height, sizes.cfg) == (64, 1000, 5.0)


def test_kohya_txt_missing_seed_is_derived_and_stable(tmp_path):
    path = write(tmp_path, "s.txt", "a cat\na dog\na cat --w 512\n")
    one, two = load_suite(str(path)), load_suite(str(path))
    seeds = [p.seed for p in one.prompts]
    assert seeds == [p.seed for p in two.prompts]
    assert seeds[0] == independent_seed("a cat") and seeds[1] == independent_seed("a dog")
    assert seeds[0] != seeds[1]
    assert seeds[2] == seeds[0]  # the seed follows the prompt text, not its position or options
    assert one.content_hash == two.content_hash


@pytest.mark.parametrize(
    "line, message",
    [
        ("a cat --l abc", "--l"),
        ("a cat --d -3", "--d"),
        ("a cat --zz 3", "--zz"),
        ("a cat --s 0", "steps"),
        ("a cat --s 1001", "steps"),
        ("a cat --w 7.5", "--w"),
        ("a cat --w", "--w needs a value"),
        ("a cat --w 512 --w 768", "twice"),
        ("a cat --d 4294967296", "seed"),
        ("a cat --l 0", "cfg"),
        ("--w 512", "text"),
    ],
)
def test_kohya_txt_malformed_line_names_file_and_line(tmp_path, line, message):
    path = write(tmp_path, "broken_prompts.txt", f"# header\n\na fine prompt --d 3\n{line}\n")
    with pytest.raises(SuiteError) as error:
        load_suite(str(path))
    text = str(error.value)
    assert "broken_prompts.txt:4:" in text and message in text
    assert "\n" not in text


def test_kohya_txt_with_only_comments_has_no_prompts(tmp_path):
    with pytest.raises(SuiteError, match=r"empty\.txt: suite has no prompts"):
        load_suite(str(write(tmp_path, "empty.txt", "# nothing\n\n")))


# --- kohya .toml and .json -----------------------------------------------------------------

KOHYA_TOML = """
[prompt]
negative_prompt = "lowres, worst quality"
width = 1024
height = 1024
scale = 7
sample_steps = 28
sample_sampler = "k_euler"

  [[prompt.subset]]
  prompt = "1girl, smiling"
  seed = 5

  [[prompt.subset]]
  prompt = "1girl, standing in the rain"
  width = 833
  negative_prompt = "blurry"
  sample_steps = 40
"""


def test_kohya_toml_merges_defaults(tmp_path):
    suite = load_suite(str(write(tmp_path, "kohya_prompts.toml", KOHYA_TOML)))
    assert suite.name == "kohya_prompts"
    a, b = suite.prompts
    assert a == PromptSpec(
        id="prompt-0", text="1girl, smiling", negative="lowres, worst quality",
        seed=5, cfg=7.0, steps=28, sampler="k_euler", width=1024, height=1024,
    )
    assert b == PromptSpec(
        id="prompt-1", text="1girl, standing in the rain", negative="blurry",
        seed=independent_seed("1girl, standing in the rain"), cfg=7.0, steps=40, sampler="k_euler",
        width=832, height=1024,
    )


def test_kohya_toml_unknown_key_names_file_and_line(tmp_path):
    text = KOHYA_TOML.replace("  seed = 5", "  seed = 5\n  guidance = 3")
    expected = r"kohya_prompts\.toml:10: prompt\.subset\[0\]: unknown or unsupported key 'guidance'"
    with pytest.raises(SuiteError, match=expected):
        load_suite(str(write(tmp_path, "kohya_prompts.toml", text)))


def test_kohya_json_strings_and_objects(tmp_path):
    data = [
        "a cat --n ugly --s 12 --d 9",
        {"prompt": "a dog", "negative_prompt": "blurry", "width": 640, "height": 515, "seed": 3,
         "scale": 5.5, "sample_steps": 25, "sample_sampler": "DPMSolver++"},
        {"prompt": "a bird"},
    ]
    suite = load_suite(str(write(tmp_path, "prompts.json", json.dumps(data))))
    assert suite.name == "prompts"
    assert suite.prompts == (
        PromptSpec(id="prompt-0", text="a cat", negative="ugly", steps=12, seed=9),
        PromptSpec(id="prompt-1", text="a dog", negative="blurry", width=640, height=512, seed=3,
                   cfg=5.5, steps=25, sampler="dpmsolver++"),
        PromptSpec(id="prompt-2", text="a bird", seed=independent_seed("a bird")),
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": "x"}, "JSON list"),
        ([42], r"\[0\]: expected a string or an object"),
        (["ok", {"prompt": "x", "cfg": 3}], r"\[1\]: unknown or unsupported key 'cfg'"),
        (["ok", "bad --s abc"], r"\[1\]: --s expects"),
        ([{"prompt": "x", "width": "512"}], r"\[0\]: width"),
    ],
)
def test_kohya_json_errors(tmp_path, data, message):
    with pytest.raises(SuiteError, match=r"k\.json.*" + message):
        load_suite(str(write(tmp_path, "k.json", json.dumps(data))))


def test_invalid_json_names_file_and_line(tmp_path):
    with pytest.raises(SuiteError, match=r"k\.json:3: invalid JSON"):
        load_suite(str(write(tmp_path, "k.json", '[\n "a",\n "b" "c"\n]')))


# --- OneTrainer samples.json ---------------------------------------------------------------


def onetrainer_entry(**overrides):
    entry = {
        "__version": 0, "enabled": True, "prompt": "a photo of sks woman", "negative_prompt": "lowres",
        "height": 768, "width": 516, "frames": 1, "length": 10.0, "seed": 42, "random_seed": False,
        "diffusion_steps": 20, "cfg_scale": 7.0, "noise_scheduler": "EULER_A",
        "text_encoder_1_layer_skip": 0, "force_last_timestep": False, "sample_inpainting": False,
        "base_image_path": "", "mask_image_path": "",
    }
    return {**entry, **overrides}


def test_onetrainer_samples(tmp_path):
    data = [
        onetrainer_entry(),
        onetrainer_entry(enabled=False, prompt="disabled one"),
        onetrainer_entry(prompt="sks woman at the beach", random_seed=True, seed=1, noise_scheduler="DPMPP_KARRAS",
                         cfg_scale=4.5, diffusion_steps=30),
    ]
    suite = load_suite(str(write(tmp_path, "samples.json", json.dumps(data))))
    assert suite.name == "samples"
    assert suite.prompts == (
        PromptSpec(id="sample-0", text="a photo of sks woman", negative="lowres", width=512, height=768,
                   seed=42, steps=20, cfg=7.0, sampler="euler_a"),
        PromptSpec(id="sample-2", text="sks woman at the beach", negative="lowres", width=512, height=768,
                   seed=independent_seed("sks woman at the beach"), steps=30, cfg=4.5, sampler="dpmpp_karras"),
    )
    again = load_suite(str(tmp_path / "samples.json"))
    assert again.content_hash == suite.content_hash


def test_onetrainer_random_seed_uses_the_kohya_rule(tmp_path):
    text = "one prompt"
    ot = load_suite(str(write(tmp_path, "samples.json", json.dumps([onetrainer_entry(prompt=text, random_seed=True)]))))
    ko = load_suite(str(write(tmp_path, "kohya.txt", text + "\n")))
    assert ot.prompts[0].seed == ko.prompts[0].seed == derived_seed(text)


@pytest.mark.parametrize(
    "entry, message",
    [
        (onetrainer_entry(enabled="yes"), "enabled"),
        (onetrainer_entry(random_seed=1), "random_seed"),
        (onetrainer_entry(diffusion_steps=0), "steps"),
        (onetrainer_entry(sample_inpainting=True), "inpainting"),
        (onetrainer_entry(prompt=None), "prompt"),
    ],
)
def test_onetrainer_errors(tmp_path, entry, message):
    with pytest.raises(SuiteError, match=r"samples\.json: \[1\]: .*" + message):
        load_suite(str(write(tmp_path, "samples.json", json.dumps([onetrainer_entry(), entry]))))


def test_onetrainer_all_disabled_has_no_prompts(tmp_path):
    with pytest.raises(SuiteError, match="suite has no prompts"):
        load_suite(str(write(tmp_path, "samples.json", json.dumps([onetrainer_entry(enabled=False)]))))


# --- registry ------------------------------------------------------------------------------


def test_list_suites_finds_shipped_suites():
    assert REPO_PROMPTS in builtin_suite_dirs()
    suites = {s.name: s for s in list_suites()}
    assert {"general", "holdout", "toy"} <= set(suites)
    assert all(len(s.prompts) >= 1 for s in suites.values())
    assert [p.id for p in suites["toy"].prompts] == ["toy-1", "toy-2", "toy-3", "toy-4"]
    assert all(p.role == "holdout" for p in suites["holdout"].prompts)
    assert len(suites["general"].by_role("target")) >= 8
    assert [s.name for s in list_suites()] == sorted(s.name for s in list_suites())


def test_load_suite_by_name_equals_by_path():
    by_name = load_suite("toy")
    by_path = load_suite(str(REPO_PROMPTS / "toy.toml"))
    assert by_name == by_path and by_name.content_hash == by_path.content_hash


def test_load_suite_in_given_dirs_by_name_or_stem(tmp_path):
    write(tmp_path, "file_stem.toml", 'name = "inner"\n[[prompts]]\nid = "a"\ntext = "x"\n')
    assert load_suite("inner", dirs=[tmp_path]).name == "inner"
    assert load_suite("file_stem", dirs=[tmp_path]).name == "inner"
    with pytest.raises(SuiteError, match=r"unknown suite 'nope'; available: inner$"):
        load_suite("nope", dirs=[tmp_path])


def test_list_suites_reports_broken_file_and_duplicate_names(tmp_path):
    write(tmp_path, "a.toml", 'name = "same"\n[[prompts]]\nid = "a"\ntext = "x"\n')
    write(tmp_path, "b.toml", 'name = "same"\n[[prompts]]\nid = "a"\ntext = "y"\n')
    with pytest.raises(SuiteError, match="two suites named 'same'"):
        list_suites([tmp_path])
    broken = tmp_path / "broken"
    broken.mkdir()
    write(broken, "oops.toml", "[[prompts]\n")
    with pytest.raises(SuiteError, match=r"oops\.toml: invalid TOML"):
        list_suites([broken])


def test_load_suite_missing_file(tmp_path):
    for ref in (str(tmp_path / "nothing.toml"), "nothing.txt", "some/dir/suite"):
        with pytest.raises(SuiteError, match=rf"^{re.escape(ref)}: file not found$"):
            load_suite(ref)


def test_load_suite_unsupported_extension(tmp_path):
    with pytest.raises(SuiteError, match=r"s\.yaml: unsupported suite file type"):
        load_suite(str(write(tmp_path, "s.yaml", "x: 1\n")))


# --- a training folder's captions (the memorisation probe) --------------------------------------


def _image(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


def test_training_folder_gives_its_distinct_captions_as_reference_prompts(tmp_path):
    data = tmp_path / "data"
    (data / "5_sks dog").mkdir(parents=True)
    for stem, caption in (("a", "a dog on grass\nignored second line"), ("b", "a dog on grass"), ("c", "sks, a cat")):
        _image(data / f"{stem}.png")
        write(data, f"{stem}.txt", caption)
    _image(data / "5_sks dog" / "d.png")  # no caption file: kohya captions it with the folder's name
    _image(data / "e.png")  # no caption, top folder: the empty caption, which is no prompt
    suite = load_suite(str(data))
    assert [p.text for p in suite.prompts] == ["a dog on grass", "sks dog", "sks, a cat"]
    assert {p.role for p in suite.prompts} == {"reference"}
    assert suite.name == "captions-data" and suite.source == str(data)
    assert any("'sks dog'" in note for note in suite.notes)
    assert any("only the first is used" in note for note in suite.notes)
    # the same folder gives the same suite; the notes do not count towards its identity
    assert load_suite(str(data)).content_hash == suite.content_hash
    assert Suite(suite.name, suite.prompts).content_hash == suite.content_hash


def test_training_folder_with_many_captions_is_probed_evenly(tmp_path):
    from evalsvc.suites.training_captions import suite_from_training_folder

    for i in range(10):
        _image(tmp_path / f"{i}.png")
        write(tmp_path, f"{i}.txt", f"caption {i}")
    suite = suite_from_training_folder(tmp_path, max_prompts=4)
    assert [p.text for p in suite.prompts] == ["caption 0", "caption 2", "caption 5", "caption 7"]
    assert "10 distinct captions: probing an evenly spaced 4 of them" in suite.notes


def test_training_folder_without_captions_is_refused(tmp_path):
    _image(tmp_path / "a.png")
    with pytest.raises(SuiteError, match=rf"^{re.escape(str(tmp_path))}: no captioned images .*1 usable image"):
        load_suite(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match=r"empty: no captioned images .*0 usable image"):
        load_suite(str(tmp_path / "empty"))


def test_a_suite_declares_its_goal_and_the_goal_is_part_of_its_content(tmp_path):
    body = '[[prompts]]\nid = "a"\ntext = "a toki on the left, gray background"\n'
    character = load_suite(str(write(tmp_path, "c.toml", 'name = "s"\ngoal = "character"\n' + body)))
    plain = load_suite(str(write(tmp_path, "p.toml", 'name = "s"\n' + body)))
    assert character.goal == "character" and plain.goal == ""
    assert character.content_hash != plain.content_hash
    with pytest.raises(SuiteError, match="goal must be one of concept, character, style, got 'portrait'"):
        load_suite(str(write(tmp_path, "bad.toml", 'name = "s"\ngoal = "portrait"\n' + body)))
