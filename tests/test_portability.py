"""Several bases per run: every LoRA is sampled on every base of its architecture with the same noise, each base is
its own reference row, and the report's portability matrix holds checkpoint x base."""

import json

import pytest

from conftest import run_cli, second_base_and_suite
from evalsvc.cli import main
from evalsvc.setting import Setting
from evalsvc.store import open_store

GRID = ["--seeds", "1,2", "--cfg", "5", "--steps", "2", "--sampler", "euler", "--size", "64x64", "--no-progress"]


_run = run_cli


@pytest.fixture(scope="module")
def three_bases(tmp_path_factory, sd15_dir, sdxl_dir, sd15_loras):
    """Run `r`: two kohya LoRA epochs trained on tiny-sd15, also sampled on a second SD1.5 base and an SDXL one."""
    root = tmp_path_factory.mktemp("bases")
    other, suite = second_base_and_suite(root, holdout=True)
    store = root / "store"
    code, out = _run(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), "--base", str(other),
                      "--base", str(sdxl_dir), *map(str, sd15_loras[:2])])
    assert code == 0, out
    code, out = _run(["sample", "--store", str(store), "--run", "r", "--suite", str(suite), *GRID])
    assert code == 0, out
    code, scored = _run(["score", "--store", str(store), "--run", "r", "--backbone", "toy", "--no-progress"])
    assert code == 0, scored
    return store, out


def _cells(store):
    with open_store(store, read_only=True) as s:
        rows = s.db.execute(
            "SELECT c.file_name, c.kind, g.setting, w.base, w.seed, g.prompt_id, s.image_path FROM grid_cells g "
            "JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key JOIN checkpoints c ON c.sha256 = w.checkpoint "
            "WHERE g.run = 'r'").fetchall()
        names = dict(s.db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())
    return [(name, kind, names.get(Setting.from_key(key).base), names.get(on), seed, prompt, image)
            for name, kind, key, on, seed, prompt, image in rows]


def test_every_lora_is_sampled_on_every_base_of_its_architecture(three_bases):
    store, out = three_bases
    cells = _cells(store)
    loras = [c for c in cells if c[1] == "lora"]
    assert {(c[0], c[2]) for c in loras} == {(f, b) for f in ("mychar-000001.safetensors", "mychar-000002.safetensors")
                                              for b in ("tiny-sd15", "other-sd15")}
    assert all(c[2] == c[3] for c in loras)  # a LoRA cell's setting names the base it was sampled on
    bases = {c[0]: c[2] for c in cells if c[1] != "lora"}
    assert bases == {"tiny-sd15": "tiny-sd15", "other-sd15": "other-sd15", "tiny-sdxl": "tiny-sdxl"}  # each its own
    assert "mychar-000001 is not sampled on the base tiny-sdxl: it is sd15, the base is sdxl" in out
    assert len(cells) == 2 * 2 * 2 * 2 + 3 * 2 * 2  # LoRAs x bases x prompts x seeds, plus each base's reference


def test_the_same_noise_on_every_base(three_bases):
    """The first step's noise depends on the seed only: a base's image differs from another's, but at strength 0
    a LoRA would give its base's image; here each LoRA image on a base is paired with that base's image."""
    from evalsvc.scoring.cells import run_cells

    with open_store(three_bases[0], read_only=True) as s:
        cells = run_cells(s, "r")
    reference = {(c.prompt_id, c.seed, c.setting) for c in cells if c.is_base}
    assert all((c.prompt_id, c.seed, c.setting) in reference for c in cells if not c.is_base)


def test_the_report_holds_the_portability_matrix(three_bases, tmp_path):
    store, _ = three_bases
    out = tmp_path / "r.json"
    assert main(["report", "--store", str(store), "--run", "r", "--format", "json", "--out", str(out),
                 "--primary", "clip_t"]) == 0
    report = json.loads(out.read_text())
    [matrix] = report["portability"]
    assert matrix["axis"] == "base" and matrix["columns"][0] == "tiny-sd15"
    assert set(matrix["columns"]) == {"tiny-sd15", "other-sd15", "tiny-sdxl"}
    rows = {row["checkpoint"]: row["cells"] for row in matrix["rows"]}
    for lora in ("mychar-000001.safetensors", "mychar-000002.safetensors"):
        assert set(rows[lora]) == {"tiny-sd15", "other-sd15"}
        for base, cell in rows[lora].items():
            assert cell["setting"]["base"] == base and cell["vs_reference"] is not None
            assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert set(rows["tiny-sdxl"]) == {"tiny-sdxl"} and rows["tiny-sdxl"]["tiny-sdxl"]["vs_reference"] is None
    md = tmp_path / "r.md"
    assert main(["report", "--store", str(store), "--run", "r", "--out", str(md)]) == 0
    assert "### Portability: checkpoint x base" in md.read_text()
    html = tmp_path / "r.html"
    assert main(["report", "--store", str(store), "--run", "r", "--format", "html", "--out", str(html)]) == 0
    assert 'class="evs-portability" data-axis="base"' in html.read_text()


def test_a_first_base_given_again_is_kept_and_another_first_base_is_refused(three_bases, sd15_dir, tmp_path, capsys):
    from evalsvc.toy.tiny import build_sd15_pipeline

    store, _ = three_bases
    stranger = tmp_path / "stranger-sd15"
    build_sd15_pipeline(seed=9).save_pretrained(stranger, safe_serialization=True)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("lock"))
    assert main(["add", "--store", str(copy), "--run", "r", "--base", str(stranger)]) != 0
    assert "run 'r' was trained on the base tiny-sd15; name it first" in capsys.readouterr().err
    assert main(["add", "--store", str(copy), "--run", "r", "--base", str(sd15_dir), "--base", str(stranger)]) == 0
    with open_store(copy, read_only=True) as s:
        from evalsvc.catalog import run_bases

        assert [b.file_name for b in run_bases(s.db, "r")] == ["tiny-sd15", "other-sd15", "stranger-sd15",
                                                              "tiny-sdxl"]


def test_a_companion_lora_is_stacked_on_every_cell_base_included(tmp_path, sd15_dir, sd15_loras):
    """`--with-lora FILE:0.5` is a setting of its own: the base with the stack is exactly the stacked LoRA sampled
    alone at 0.5; the candidate gets both LoRAs; the report's stack matrix compares each row with its unstacked self."""
    from PIL import Image

    from evalsvc.sampling.infotext import parse_infotext

    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\n[[prompts]]\nid = "circle"\ntext = "a red circle"\n')
    store, companion = tmp_path / "store", sd15_loras[2]
    grid = ["--suite", str(suite), *GRID]
    assert main(["add", "--store", str(store), "--run", "s", "--base", str(sd15_dir), str(sd15_loras[0])]) == 0
    assert main(["add", "--store", str(store), "--run", "alone", "--base", str(sd15_dir), str(companion)]) == 0
    assert main(["sample", "--store", str(store), "--run", "s", *grid]) == 0
    code, out = _run(["sample", "--store", str(store), "--run", "s", *grid, "--with-lora", f"{companion}:0.5"])
    assert code == 0, out
    assert main(["sample", "--store", str(store), "--run", "alone", *grid, "--lora-scale", "0.5"]) == 0
    with open_store(store, read_only=True) as s:
        rows = s.db.execute(
            "SELECT g.run, c.file_name, g.setting, w.seed, s.image_path, s.infotext FROM grid_cells g "
            "JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
            "JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()
    images = {}
    for run, name, key, seed, image, infotext in rows:
        stacked = bool(Setting.from_key(key).stack)
        images[(run, name, stacked, seed)] = (image, infotext)

    def pixels(key):
        import numpy as np

        with Image.open(store / "images" / images[key][0]) as png:
            return np.asarray(png.convert("RGB"))

    import numpy as np

    for seed in (1, 2):
        assert np.array_equal(pixels(("s", "tiny-sd15", True, seed)), pixels(("alone", companion.name, False, seed)))
        assert not np.array_equal(pixels(("s", "tiny-sd15", True, seed)), pixels(("s", "tiny-sd15", False, seed)))
        both = pixels(("s", sd15_loras[0].name, True, seed))
        assert not np.array_equal(both, pixels(("s", sd15_loras[0].name, False, seed)))
        prompt = parse_infotext(images[("s", sd15_loras[0].name, True, seed)][1])["Prompt"]
        assert prompt.endswith("<lora:mychar-000001:1> <lora:mychar-000003:0.5>")
    assert main(["score", "--store", str(store), "--run", "s", "--backbone", "toy", "--no-progress"]) == 0
    out = tmp_path / "s.json"
    assert main(["report", "--store", str(store), "--run", "s", "--format", "json", "--out", str(out)]) == 0
    [matrix] = json.loads(out.read_text())["portability"]
    assert matrix["axis"] == "stack" and matrix["columns"] == ["none", "mychar-000003.safetensors:0.5"]
    for row in matrix["rows"]:
        assert row["cells"]["none"]["vs_reference"] is None
        assert row["cells"]["mychar-000003.safetensors:0.5"]["vs_reference"]["n"] == 2
