"""The trainer end to end: exactly which files exist after a short run, and that they are usable."""

import json
from pathlib import Path

import pytest
from PIL import Image

from evalsvc.checkpoints import inspect_checkpoint, read_header


def _dataset(folder: Path) -> Path:
    images = folder / "2_toychar"
    images.mkdir(parents=True)
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (64, 64), colour).save(images / f"img{i}.png")
        if i:  # the first image has no caption: kohya uses the folder name
            (images / f"img{i}.txt").write_text(f"toychar, square, colour {i}")
    return folder


def _config(tmp_path: Path, base: Path, **train) -> Path:
    data = _dataset(tmp_path / "data")
    text = f"""
[model]
base = "{base}"
[network]
rank = 4
alpha = 2
train_text_encoder = true
[train]
output_dir = "{tmp_path / 'out'}"
output_name = "toychar"
epochs = {train.get('epochs', 3)}
batch_size = 2
learning_rate = 1e-3
scheduler = "cosine"
warmup_steps = 1
noise_offset = 0.05
min_snr_gamma = 5
[ema]
enabled = true
decay = 0.9
[dataset]
folder = "{data}"
resolution = 64
bucket_step = 64
shuffle_tags = true
keep_tokens = 1
"""
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("which,epochs", [("sd15_dir", 3), ("sdxl_dir", 1)])
def test_lora_training_writes_raw_and_ema_epochs_that_load_and_are_registered(request, tmp_path, which, epochs):
    from evalsvc.cli import main
    from evalsvc.store import open_store

    base = request.getfixturevalue(which)
    config = _config(tmp_path, base, epochs=epochs)
    store = tmp_path / "store"
    assert main(["train", str(config), "--store", str(store), "--no-progress"]) == 0

    out = tmp_path / "out"
    expected = sorted([f"toychar-{e:06d}.safetensors" for e in range(1, epochs + 1)]
                      + [f"toychar-ema-{e:06d}.safetensors" for e in range(1, epochs + 1)])
    assert sorted(p.name for p in out.iterdir()) == expected  # no temp files left either
    for epoch in range(1, epochs + 1):
        for ema in (False, True):
            path = out / (f"toychar-ema-{epoch:06d}.safetensors" if ema else f"toychar-{epoch:06d}.safetensors")
            header = read_header(path)
            assert header.metadata["ss_epoch"] == str(epoch)
            assert header.metadata["evalsvc.ema"] == ("true" if ema else "false")
            assert json.loads(header.metadata["evalsvc.config"])["train"]["output_name"] == "toychar"
            keys = set(header.tensors)
            assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
            assert any(k.startswith(("lora_te_", "lora_te1_")) for k in keys)
            info = inspect_checkpoint(path)
            assert (info.kind, info.epoch, info.ema) == ("lora", epoch, ema)
    # diffusers' own loader accepts the files.
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(str(out / f"toychar-{epochs:06d}.safetensors"))
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())

    with open_store(store) as s:
        rows = dict(s.db.execute("SELECT c.file_name, rc.role FROM run_checkpoints rc JOIN checkpoints c "
                                 "ON c.sha256 = rc.sha256 WHERE rc.run = 'toychar'").fetchall())
        losses = s.db.execute("SELECT count(*), min(step), max(epoch) FROM losses WHERE run = 'toychar'").fetchone()
    assert rows == {**{name: "candidate" for name in expected}, base.name: "base"}
    assert losses[0] >= epochs and losses[1] == 1 and losses[2] == epochs
