"""Setting axes as lists: the grid is their product, every image says its own values, strength 0 is the base."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from evalsvc.cli import main
from evalsvc.sampling.infotext import parse_infotext
from evalsvc.setting import Setting

AXES = ["--seeds", "1", "--cfg", "5", "--steps", "2,3", "--sampler", "euler,dpmpp_2m_karras", "--lora-scale", "0,1",
        "--size", "64x64", "--no-progress"]


def _suite(tmp_path: Path) -> Path:
    path = tmp_path / "two.toml"
    path.write_text('name = "two"\n[[prompts]]\nid = "circle"\ntext = "a red circle"\n'
                    '[[prompts]]\nid = "square"\ntext = "a blue square on the left"\n')
    return path


_run = run_cli


@pytest.fixture(scope="module")
def axes_store(tmp_path_factory, sd15_dir, sd15_loras):
    root = tmp_path_factory.mktemp("axes")
    store = root / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(sd15_loras[0])]) == 0
    code, out = _run(["sample", "--store", str(store), "--run", "r", "--suite", str(_suite(root)), *AXES])
    assert code == 0, out
    return store, out


def _links(store: Path):
    from evalsvc.store import open_store

    with open_store(store) as s:
        return s.db.execute(
            "SELECT c.kind, g.prompt_id, g.setting, w.steps, w.sampler, w.lora_scale, s.image_path, s.infotext "
            "FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
            "JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()


def test_the_grid_is_the_product_of_the_axes(axes_store):
    store, out = axes_store
    links = _links(store)
    settings = {Setting.from_key(r[2]) for r in links}
    # 2 steps x 2 samplers x 2 strengths = 8 settings; the base's images are the reference at both strengths
    assert len(settings) == 8
    assert {(s.steps, s.sampler, s.lora_scale) for s in settings} == {
        (st, sa, sc) for st in (2, 3) for sa in ("euler", "dpmpp_2m_karras") for sc in (0.0, 1.0)}
    lora = [r for r in links if r[0] == "lora"]
    base = [r for r in links if r[0] != "lora"]
    assert len(lora) == 2 * 8 and len(base) == 2 * 8  # prompts x settings, one link each
    assert len({r[6] for r in base}) == 2 * 4  # the base has one image per prompt x steps x sampler
    assert "grid: 24 cells over 8 setting(s); 24 to sample" in out  # 8 base + 16 LoRA images, printed first


def test_each_png_carries_its_own_values(axes_store):
    store, _ = axes_store
    a1111 = {"euler": ("Euler", "Automatic"), "dpmpp_2m_karras": ("DPM++ 2M", "Karras")}
    for kind, _, key, steps, sampler, scale, image, infotext in _links(store):
        setting = Setting.from_key(key)
        fields = parse_infotext(Image.open(store / "images" / image).info["parameters"])
        assert fields == parse_infotext(infotext)
        assert fields["Steps"] == str(steps) == str(setting.steps)
        assert (fields["Sampler"], fields["Schedule type"]) == a1111[sampler] and sampler == setting.sampler
        if kind == "lora":
            assert f":{setting.lora_scale:g}>" in fields["Prompt"] and scale == setting.lora_scale


def test_a_lora_at_strength_zero_is_pixel_identical_to_its_base_at_every_setting(axes_store):
    store, _ = axes_store
    pixels = {}
    for kind, prompt_id, key, steps, sampler, scale, image, _ in _links(store):
        with Image.open(store / "images" / image) as png:
            pixels[(kind, prompt_id, steps, sampler, scale)] = np.asarray(png.convert("RGB"))
    compared = 0
    for (kind, prompt_id, steps, sampler, scale), array in pixels.items():
        if kind == "lora" and scale == 0.0:
            base = next(v for (k, p, st, sa, _), v in pixels.items() if k != "lora" and (p, st, sa) ==
                        (prompt_id, steps, sampler))
            assert np.array_equal(array, base)
            assert not np.array_equal(pixels[(kind, prompt_id, steps, sampler, 1.0)], base)
            compared += 1
    assert compared == 2 * 2 * 2


def test_list_values_are_checked_one_by_one(tmp_path, sd15_dir, capsys):
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir)]) == 0
    suite = str(_suite(tmp_path))
    with pytest.raises(SystemExit):
        main(["sample", "--store", str(store), "--run", "r", "--suite", suite, "--steps", "20,x"])
    assert "'x' in '20,x' is not an integer" in capsys.readouterr().err
    code, out = _run(["sample", "--store", str(store), "--run", "r", "--suite", suite, "--seeds", "1", "--steps",
                      "2,2", "--size", "64x64", "--no-progress"])
    assert code == 0 and "--steps: 2 is given twice; sampled once" in out
    assert "grid: 2 cells over 1 setting(s)" in out


def test_max_cells_stops_before_anything_is_sampled(tmp_path, sd15_dir, capsys):
    from evalsvc.store import open_store

    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir)]) == 0
    code = main(["sample", "--store", str(store), "--run", "r", "--suite", str(_suite(tmp_path)), "--seeds", "1,2,3",
                 "--steps", "2,3", "--size", "64x64", "--max-cells", "10", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "this grid has 12 cells, 12 of them still to sample, over --max-cells 10" in err
    with open_store(store) as s:
        assert s.db.execute("SELECT count(*) FROM work").fetchone()[0] == 0
        assert s.db.execute("SELECT count(*) FROM grid_cells").fetchone()[0] == 0
