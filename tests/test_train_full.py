"""Full finetunes, the evaluation grid the trainer queues, and EMA weights against an independent EMA."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from evalsvc.checkpoints import inspect_checkpoint, read_header


def _dataset(folder: Path, count: int = 3) -> Path:
    images = folder / "1_shapes"
    images.mkdir(parents=True)
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 200, 30)]
    for i in range(count):
        Image.new("RGB", (64, 64), colours[i]).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"a square, colour {i}")
    return folder


def _write_config(tmp_path: Path, base: Path, network: str, ema: str, extra: str = "", epochs: int = 2,
                  images: int = 3) -> Path:
    data = _dataset(tmp_path / "data", images)
    path = tmp_path / "train.toml"
    path.write_text(f"""
[model]
base = "{base}"
[network]
{network}
[train]
output_dir = "{tmp_path / 'out'}"
output_name = "shapes"
epochs = {epochs}
batch_size = {images}
learning_rate = 1e-3
[ema]
{ema}
[dataset]
folder = "{data}"
resolution = 64
{extra}
""")
    return path


def test_full_finetune_saves_single_files_and_queues_their_grid(sd15_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from evalsvc.cli import main
    from evalsvc.store import open_store
    from evalsvc.suites import load_suite

    config = _write_config(tmp_path, sd15_dir, 'kind = "full"\ntrain_text_encoder = true\ntext_encoder_lr = 1e-4',
                           "enabled = true\ndecay = 0.5",
                           '[eval]\nsuite = "toy"\nseeds = [3]\ncfgs = [5.0]\nsteps = 2\nsampler = "euler"')
    store = tmp_path / "store"
    assert main(["train", str(config), "--store", str(store), "--no-progress"]) == 0

    out = tmp_path / "out"
    names = ["shapes-000001.safetensors", "shapes-000002.safetensors",
             "shapes-ema-000001.safetensors", "shapes-ema-000002.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        info = inspect_checkpoint(out / name)
        assert (info.kind, info.arch, info.ema) == ("full", "sd15", "-ema-" in name)
        meta = read_header(out / name).metadata
        assert meta["modelspec.architecture"] == "stable-diffusion-v1" and "ss_network_module" not in meta

    base = StableDiffusionPipeline.from_pretrained(sd15_dir)
    tuned = StableDiffusionPipeline.from_single_file(out / names[1], config=str(sd15_dir), local_files_only=True)
    def differs(a, b):
        return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert differs(base.unet, tuned.unet) and differs(base.text_encoder, tuned.text_encoder)
    assert not differs(base.vae, tuned.vae)  # the VAE is never trained

    prompts = len(load_suite("toy").prompts)
    with open_store(store) as s:
        queued = s.db.execute("SELECT count(*), count(DISTINCT checkpoint), min(steps), min(seed), min(cfg) "
                              "FROM work WHERE state = 'pending'").fetchone()
    assert queued == (5 * prompts, 5, 2, 3, 5.0)  # the four epochs and the base, as a reference
    # The engine samples what the trainer queued, with no grid options repeated.
    assert main(["sample", "--run", "shapes", "--store", str(store), "--no-progress"]) == 0
    with open_store(store, read_only=True) as s:
        states = dict(s.db.execute("SELECT state, count(*) FROM work GROUP BY state").fetchall())
        samples = s.db.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert states == {"done": 5 * prompts} and samples == 5 * prompts


@pytest.mark.parametrize("update_every", [1, 2])
def test_ema_files_equal_an_independent_ema_of_the_raw_files(sd15_dir, tmp_path, update_every):
    """One optimizer step per epoch, so the raw epoch files are the raw weights after every step."""
    from trainer.config import load_config
    from trainer.train import train

    decay, epochs = 0.7, 4
    config = load_config(_write_config(tmp_path, sd15_dir, "rank = 2", f"enabled = true\ndecay = {decay}\n"
                                       f"update_every = {update_every}", epochs=epochs, images=2))
    assert [e.step for e in train(config) if e.kind == "epoch"] == [1, 2, 3, 4]

    out = tmp_path / "out"
    raw = [load_file(out / f"shapes-{e:06d}.safetensors") for e in range(1, epochs + 1)]
    ema = [load_file(out / f"shapes-ema-{e:06d}.safetensors") for e in range(1, epochs + 1)]
    ups = [k for k in raw[0] if k.endswith("lora_up.weight")]
    downs = [k for k in raw[0] if k.endswith("lora_down.weight")]
    assert ups and downs
    # lora_up starts at zero (PEFT's init), so its EMA is fully determined by the raw files.
    for key in ups:
        shadow = torch.zeros_like(raw[0][key])
        for step in range(1, epochs + 1):
            if step % update_every == 0:
                shadow = decay * shadow + (1 - decay) * raw[step - 1][key]
            torch.testing.assert_close(ema[step - 1][key], shadow, rtol=1e-5, atol=1e-7)
        assert shadow.abs().sum() > 0
    # lora_down starts random: recover its start from the first update, then predict the rest.
    first = update_every
    for key in downs:
        start = (ema[first - 1][key] - (1 - decay) * raw[first - 1][key]) / decay
        shadow = start
        for step in range(1, epochs + 1):
            if step % update_every == 0:
                shadow = decay * shadow + (1 - decay) * raw[step - 1][key]
            torch.testing.assert_close(ema[step - 1][key], shadow, rtol=1e-5, atol=1e-6)
        assert not torch.equal(ema[-1][key], raw[-1][key])


def test_cached_latents_train_the_same_weights_as_encoding_every_step(sd15_dir, tmp_path):
    """The cache stores each image's latent distribution; the per-step draws stay the same random stream."""
    from trainer.config import load_config
    from trainer.train import train

    finals = []
    for cache in (False, True):
        folder = tmp_path / f"cache-{cache}"
        folder.mkdir()
        config = load_config(_write_config(folder, sd15_dir, "rank = 2", "enabled = false", epochs=2, images=2,
                                           extra=f"cache_latents = {str(cache).lower()}"))
        list(train(config))
        finals.append(load_file(folder / "out" / "shapes-000002.safetensors"))
    assert finals[0].keys() == finals[1].keys()
    # Encoding a batch of one image and a batch of two round differently in the last bits; Adam turns that
    # into differences of a few percent of one step (lr 1e-3) on near-zero gradients. A different random
    # stream would differ by whole steps.
    for key in finals[0]:
        torch.testing.assert_close(finals[0][key], finals[1][key], rtol=1e-3, atol=2e-4)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in finals[1].items() if "lora_up" in k)


def test_cached_latents_refuse_flip():
    from evalsvc.errors import InputError
    from trainer.config import DatasetConfig

    with pytest.raises(InputError, match="dataset.cache_latents cannot be true with dataset.flip"):
        DatasetConfig(folder="data", flip=True, cache_latents=True)
