"""`evalsvc add` on a realistic folder, and a single-file checkpoint sampled beside the base."""

import shutil

import numpy as np
from PIL import Image
from safetensors.torch import load_file, save_file

from evalsvc.cli import main


def test_add_folder_records_kind_arch_epoch_and_ema(tmp_path, sd15_pipe, sd15_dir, sd15_loras):
    from evalsvc.catalog import run_checkpoints
    from evalsvc.store import open_store
    from evalsvc.toy.single_file import save_single_file

    folder = tmp_path / "output"
    folder.mkdir()
    for path in sd15_loras:
        shutil.copy(path, folder / path.name)
    # OneTrainer names its saves by step and epoch and writes no ss_* keys.
    save_file(load_file(sd15_loras[1]), folder / "mymodel2024-05-01_12-30-45-save-1200-4-0.safetensors",
              metadata={"modelspec.architecture": "stable-diffusion-v1/lora"})
    save_file(load_file(sd15_loras[2]), folder / "mychar-ema-000003.safetensors", metadata={"ss_base_model_version": "sd_v1"})
    save_single_file(sd15_pipe, folder / "finetune-000005.safetensors", metadata={"ss_epoch": "5"})
    (folder / "mychar-000001-state").mkdir()  # kohya training state: skipped
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(folder)]) == 0
    assert main(["add", "--store", str(store), "--run", "r", str(folder)]) == 0  # same bytes: nothing new
    with open_store(store) as s:
        rows = {r.file_name: (r.kind, r.arch, r.epoch, r.step, r.ema, r.role) for r in run_checkpoints(s.db, "r")}
        assert s.db.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 7
    assert rows == {
        "tiny-sd15": ("diffusers", "sd15", None, None, False, "base"),
        "mychar-000001.safetensors": ("lora", "sd15", 1, 10, False, "candidate"),
        "mychar-000002.safetensors": ("lora", "sd15", 2, 20, False, "candidate"),
        "mychar-000003.safetensors": ("lora", "sd15", 3, 30, False, "candidate"),
        "mymodel2024-05-01_12-30-45-save-1200-4-0.safetensors": ("lora", "sd15", 4, 1200, False, "candidate"),
        "mychar-ema-000003.safetensors": ("lora", "sd15", 3, None, True, "candidate"),
        "finetune-000005.safetensors": ("full", "sd15", 5, None, False, "candidate"),
    }


def test_single_file_checkpoint_samples_like_the_same_weights_as_a_folder(tmp_path, sd15_pipe, sd15_dir):
    from evalsvc.store import open_store
    from evalsvc.toy.single_file import save_single_file

    single = save_single_file(sd15_pipe, tmp_path / "same-weights.safetensors")
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(single)]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", "toy", "--seeds", "3", "--steps", "3",
                 "--size", "64x64", "--sampler", "euler", "--no-progress"]) == 0
    with open_store(store) as s:
        rows = s.db.execute("SELECT c.kind, w.prompt, s.image_path FROM samples s JOIN work w ON w.key = s.key "
                            "JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()
    by_kind = {}
    for kind, prompt, rel in rows:
        by_kind.setdefault(kind, {})[prompt] = np.asarray(Image.open(store / "images" / rel))
    assert len(by_kind["full"]) == len(by_kind["diffusers"]) == 4
    for prompt, image in by_kind["full"].items():
        assert np.array_equal(image, by_kind["diffusers"][prompt])
