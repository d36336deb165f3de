"""Grids end to end through the CLI functions: catalog, planning, sampling, store, infotext."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evalsvc.cli import main
from evalsvc.sampling.infotext import parse_infotext

GRID = ["--seeds", "1,2", "--cfg", "3,7", "--steps", "4", "--sampler", "euler_a", "--size", "64x64", "--no-progress"]


def _two_prompt_suite(tmp_path: Path) -> Path:
    path = tmp_path / "two.toml"
    path.write_text('name = "two"\n[[prompts]]\nid = "circle"\ntext = "a red circle"\n'
                    '[[prompts]]\nid = "square"\ntext = "a blue square on the left"\nnegative = "blurry"\n')
    return path


def _status(store) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--store", str(store), "--json"]) == 0
    return json.loads(out.getvalue())


def _samples(store_root: Path):
    from evalsvc.store import open_store

    with open_store(store_root) as store:
        return store.db.execute(
            "SELECT c.file_name, w.prompt, w.seed, w.cfg, s.image_path, s.infotext FROM samples s "
            "JOIN work w ON w.key = s.key JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()


def test_lora_epochs_plus_base_grid_stores_32_images_with_infotext(tmp_path, sd15_dir, sd15_loras):
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), *map(str, sd15_loras)]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(_two_prompt_suite(tmp_path)), *GRID]) == 0

    rows = _samples(store)
    assert len(rows) == 32  # (3 epochs + base) x 2 prompts x 2 seeds x 2 CFG
    assert len({r[4] for r in rows}) == 32
    status = _status(store)["runs"][0]
    assert (status["checkpoints"], status["cells_done"], status["cells_total"]) == (4, 32, 32)

    for file_name, prompt, seed, cfg, rel, infotext in rows:
        png = Image.open(store / "images" / rel)
        assert png.info["parameters"] == infotext
        fields = parse_infotext(infotext)
        assert fields["Seed"] == str(seed) and fields["CFG scale"] == f"{cfg:g}" and fields["Size"] == "64x64"
        assert fields["Steps"] == "4" and fields["Sampler"] == "Euler a" and fields["Schedule type"] == "Automatic"
        # A1111 shows no hash for a diffusers folder (it hashes single files); ours is not one it knows.
        assert fields["Model"] == "tiny-sd15" and "Model hash" not in fields
        if file_name.startswith("mychar-"):
            stem = Path(file_name).stem
            lora_hash = fields["Lora hashes"]
            assert lora_hash.startswith(f"{stem}: ") and len(lora_hash.split(": ")[1]) == 12
            assert fields["Prompt"] == f"{prompt} <lora:{stem}:1>"
        else:
            assert "Lora hashes" not in fields and fields["Prompt"] == prompt

    # A rerun finds the grid done and samples nothing.
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(_two_prompt_suite(tmp_path)), *GRID]) == 0
    assert len(_samples(store)) == 32


def test_zero_lora_is_pixel_identical_to_base_and_base_survives_swaps(tmp_path, sd15_pipe, sd15_dir, sd15_loras):
    import torch

    from evalsvc.catalog import run_checkpoints
    from evalsvc.sampling.engine import CellSpec, PromptCache, sample_cells
    from evalsvc.sampling.models import CheckpointSwitcher
    from evalsvc.store import open_store
    from evalsvc.toy.lora_files import random_lora_tensors, save_kohya_lora

    zero = save_kohya_lora(sd15_pipe, random_lora_tensors(sd15_pipe, rank=4, seed=9, zero_up=True),
                           tmp_path / "zero" / "zerolora-000001.safetensors")
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), *map(str, sd15_loras), str(zero)]) == 0
    with open_store(store) as s:
        rows = {r.file_name: r for r in run_checkpoints(s.db, "r")}
    base = rows["tiny-sd15"]
    switcher = CheckpointSwitcher(base, "cpu", torch.float32)
    cache = PromptCache()
    cells = [CellSpec(p, "", seed, cfg, 4, "euler_a", 64, 64)
             for p in ("a red circle", "a blue square") for seed in (1, 2) for cfg in (3.0, 7.0)]

    def images(row):
        pipe, te_state = switcher.activate(row, 1.0)
        return [np.asarray(img) for img in sample_cells(pipe, cells, cache, te_state)]

    first = images(base)
    loras = [images(rows[p.name]) for p in sd15_loras]
    zeroed = images(rows[zero.name])
    more = [images(rows[p.name]) for p in reversed(sd15_loras)]
    again = images(base)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)), "base after LoRA swaps differs from base first"
    assert all(np.array_equal(a, b) for a, b in zip(first, zeroed)), "a LoRA with zero up-weights changed pixels"
    for lora in loras + more:
        assert all(not np.array_equal(a, b) for a, b in zip(first, lora))
    assert all(np.array_equal(a, b) for a, b in zip(loras[0], more[-1]))  # same LoRA, same pixels


def test_sdxl_grid_with_sgm_named_kohya_lora(tmp_path, sdxl_dir, sdxl_loras):
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "xl", "--base", str(sdxl_dir), *map(str, sdxl_loras)]) == 0
    assert main(["sample", "--store", str(store), "--run", "xl", "--suite", str(_two_prompt_suite(tmp_path)), *GRID]) == 0
    rows = _samples(store)
    assert len(rows) == 24  # (2 epochs + base) x 2 x 2 x 2
    by_ckpt = {}
    for file_name, prompt, seed, cfg, rel, _ in rows:
        by_ckpt.setdefault(file_name, {})[(prompt, seed, cfg)] = np.asarray(Image.open(store / "images" / rel))
    base = by_ckpt.pop("tiny-sdxl")
    for images in by_ckpt.values():  # each LoRA changed the pixels of every cell
        assert all(not np.array_equal(images[k], base[k]) for k in base)


def test_sample_runs_only_the_cells_it_was_asked_for(tmp_path, sd15_dir):
    from evalsvc.sampling.grid import GridOptions, plan_grid
    from evalsvc.sampling.runner import RunnerConfig, sample_run
    from evalsvc.store import open_store
    from evalsvc.suites import load_suite

    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir)]) == 0
    suite = load_suite("toy")
    with open_store(store) as s:
        left = plan_grid(s, "r", suite, GridOptions(seeds=(1,), steps=(2,), sizes=((128, 128),)))  # planned, never sampled
        report = sample_run(s, "r", suite, GridOptions(seeds=(1,), steps=(2,), sizes=((64, 64),)), RunnerConfig(progress=False))
        states = dict(s.db.execute("SELECT width, state FROM work GROUP BY ALL").fetchall())
    assert (report.cells_total, report.sampled) == (4, 4) and len(left) == 4
    assert states == {64: "done", 128: "pending"}
    status = _status(store)["runs"][0]
    assert (status["cells_done"], status["cells_total"]) == (4, 8)  # status shows every grid of the run


def test_a_run_whose_checkpoints_all_failed_says_so(tmp_path, capsys):
    from evalsvc.catalog import mark_failed
    from evalsvc.store import open_store

    store = tmp_path / "store"
    lora = tmp_path / "x-000001.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 768),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(768, 4)}, lora,
              metadata={"ss_base_model_version": "sd_v1"})
    assert main(["add", "--store", str(store), "--run", "r", str(lora)]) == 0
    with open_store(store) as s:
        mark_failed(s.db, s.db.execute("SELECT sha256 FROM checkpoints").fetchone()[0], "tensor 'x' has 1 NaN/Inf values")
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", "toy", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoints" in err and "x-000001: tensor 'x' has 1 NaN/Inf values" in err


@pytest.mark.parametrize(("folder", "side"), [("toy", 64), ("tiny", 64)])
def test_native_size_reads_the_vae_downscale_from_its_config(folder, side, sd15_dir):
    """The toy base's VAE has 3 blocks (downscale 4, latents 16 -> 64 px); SD's and the tiny one's have 4 (x8)."""
    from evalsvc.catalog import CheckpointRow
    from evalsvc.sampling.models import native_size
    from evalsvc.toy.toy_base import TOY_BASE_DIR

    path = str(TOY_BASE_DIR if folder == "toy" else sd15_dir)
    row = CheckpointRow("0" * 64, path, Path(path).name, "diffusers", "sd15", None, None, None, False, None, None, {},
                        "ok", None, role="base")
    vae = json.loads((Path(path) / "vae" / "config.json").read_text())
    unet = json.loads((Path(path) / "unet" / "config.json").read_text())
    assert native_size(row) == side == unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)


def test_a_training_folder_is_the_memorisation_probe(tmp_path, sd15_dir, capsys):
    """`--suite FOLDER` samples the folder's captions; scored against the same folder, each image gets its
    nearest training image and the near-copy verdict."""
    from trainer.toyworld.world import write_dataset

    data = write_dataset(tmp_path / "data", 3, seed=1, colours=("purple",), repeats=2)
    (data / "2_toyworld" / "00002.txt").unlink()  # kohya captions it with the folder's name
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir)]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(data), "--seeds", "1,2", "--steps", "2",
                 "--size", "64x64", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "suite 'captions-data': 1 image(s) without a caption use the folder name 'toyworld'" in out
    captions = sorted({p.read_text().strip() for p in data.rglob("*.txt")} | {"toyworld"})
    rows = _samples(store)
    assert sorted({r[1] for r in rows}) == captions and len(rows) == 3 * 2
    assert main(["score", "--store", str(store), "--run", "r", "--backbone", "toy", "--reference", str(data),
                 "--metrics", "nearest_train,memorised", "--no-progress"]) == 0
    from evalsvc.store import open_store

    with open_store(store, read_only=True) as s:
        scored = dict(s.db.execute("SELECT metric, count(*) FROM scores GROUP BY metric").fetchall())
        nearest = {n for n, in s.db.execute("SELECT DISTINCT details->>'nearest' FROM scores "
                                            "WHERE metric = 'nearest_train'").fetchall()}
    assert scored == {"nearest_train": 6, "memorised": 6}
    assert nearest <= {"00000.png", "00001.png", "00002.png"}
