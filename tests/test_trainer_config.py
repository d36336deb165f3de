"""The trainer's TOML config: a full file loads, defaults hold, and every kind of nonsense is refused by key."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evalsvc.errors import InputError
from trainer.config import DatasetConfig, NetworkConfig, TrainConfig, load_config

FULL = """
[model]
base = "models/sd15"
arch = "sd15"

[network]
kind = "lora"
rank = 8
alpha = 4
dropout = 0.1
train_text_encoder = true
unet_lr = 2e-4
text_encoder_lr = 5e-5

[train]
output_dir = "out"
output_name = "mychar"
seed = 7
epochs = 4
batch_size = 2
gradient_accumulation = 2
learning_rate = 1e-4
optimizer = "lion"
scheduler = "cosine_with_restarts"
warmup_steps = 10
restarts = 3
mixed_precision = "bf16"
gradient_checkpointing = true
noise_offset = 0.05
min_snr_gamma = 5
max_grad_norm = 1.0

[ema]
enabled = true
decay = 0.995
update_every = 2

[dataset]
folder = "data"
resolution = 768
min_resolution = 320
max_resolution = 1536
bucket_step = 64
repeats = 2
flip = true
caption_extension = ".caption"
shuffle_tags = true
keep_tokens = 1
caption_dropout = 0.05
trigger_word = "mychar"

[eval]
suite = "toy"
seeds = [1, 2]
cfgs = [4, 7.5]
steps = 12
sampler = "Euler a"
"""

MINIMAL = {"model": {"base": "m"}, "train": {"output_dir": "o"}, "dataset": {"folder": "d"}}


def write(tmp_path, text):
    path = tmp_path / "train.toml"
    path.write_text(text, encoding="utf-8")
    return path


def with_value(section, key, value):
    data = {name: dict(table) for name, table in MINIMAL.items()}
    data.setdefault(section, {})[key] = value
    return data


def test_full_file_loads(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert config.model.arch == "sd15"
    assert (config.network.rank, config.network.alpha, config.network.train_text_encoder) == (8, 4.0, True)
    assert config.train.optimizer == "lion" and config.train.restarts == 3
    assert config.train.min_snr_gamma == 5.0 and isinstance(config.train.min_snr_gamma, float)
    assert config.ema.enabled and config.ema.decay == 0.995 and config.ema.update_every == 2
    assert (config.dataset.min_resolution, config.dataset.max_resolution) == (320, 1536)
    assert config.dataset.trigger_word == "mychar" and config.dataset.caption_extension == ".caption"
    assert config.eval.seeds == (1, 2) and config.eval.cfgs == (4.0, 7.5) and config.eval.steps == (12,)
    assert config.eval.grid_options().samplers == ("euler_a",)


def test_to_dict_is_json_and_round_trips(tmp_path):
    config = load_config(write(tmp_path, FULL))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["train"]["output_name"] == "mychar"
    assert set(data) == {"model", "network", "train", "ema", "dataset", "eval"}
    assert data["eval"]["cfgs"] == [4.0, 7.5]
    assert TrainConfig.from_dict(data) == config


def test_defaults():
    config = TrainConfig.from_dict(MINIMAL)
    assert config.model.arch is None
    assert config.network.kind == "lora" and config.network.alpha == config.network.rank
    assert config.network.unet_lr is None and config.network.text_encoder_lr is None
    assert config.train.output_name == "lora" and config.train.epochs >= 1 and config.train.learning_rate > 0
    assert config.train.scheduler == "constant" and config.train.mixed_precision == "no"
    assert config.ema == type(config.ema)() and not config.ema.enabled and config.ema.decay == 0.999
    dataset = config.dataset
    assert (dataset.resolution, dataset.min_resolution, dataset.max_resolution) == (512, 256, 1024)
    assert (dataset.bucket_step, dataset.repeats, dataset.caption_extension) == (64, 1, ".txt")
    assert dataset.trigger_word is None and dataset.caption_dropout == 0.0


def test_alpha_defaults_to_rank_and_resolution_bounds_follow_resolution():
    assert NetworkConfig(rank=32).alpha == 32.0
    assert NetworkConfig(rank=32, alpha=1).alpha == 1.0
    wide = DatasetConfig(folder="d", resolution=1024)
    assert (wide.min_resolution, wide.max_resolution) == (512, 2048)
    capped = DatasetConfig(folder="d", resolution=4096)
    assert capped.max_resolution == 4096
    odd = DatasetConfig(folder="d", resolution=520)
    assert (odd.min_resolution, odd.max_resolution) == (256, 1024)
    small = DatasetConfig(folder="d", resolution=64)
    assert (small.min_resolution, small.max_resolution) == (64, 128)


INVALID = [
    ("model", "base", ""),
    ("model", "arch", "sd3"),
    ("network", "kind", "loha"),
    ("network", "rank", 0),
    ("network", "rank", 4.5),
    ("network", "alpha", -1),
    ("network", "dropout", 1.5),
    ("network", "dropout", 1),
    ("network", "train_text_encoder", "yes"),
    ("network", "unet_lr", 0),
    ("network", "text_encoder_lr", -1e-4),
    ("train", "output_dir", ""),
    ("train", "output_name", "a/b"),
    ("train", "seed", -1),
    ("train", "epochs", 0),
    ("train", "batch_size", 0),
    ("train", "gradient_accumulation", 0),
    ("train", "learning_rate", -1),
    ("train", "learning_rate", float("nan")),
    ("train", "optimizer", "sgd"),
    ("train", "scheduler", "polynomial"),
    ("train", "warmup_steps", -5),
    ("train", "restarts", 0),
    ("train", "mixed_precision", "fp8"),
    ("train", "gradient_checkpointing", 1),
    ("train", "noise_offset", -0.1),
    ("train", "min_snr_gamma", 0),
    ("train", "max_grad_norm", 0),
    ("ema", "enabled", "true"),
    ("ema", "decay", 1),
    ("ema", "decay", 0),
    ("ema", "update_every", 0),
    ("dataset", "folder", ""),
    ("dataset", "resolution", 500),
    ("dataset", "resolution", 32),
    ("dataset", "resolution", 8192),
    ("dataset", "min_resolution", 300),
    ("dataset", "min_resolution", 1024),
    ("dataset", "max_resolution", 1000),
    ("dataset", "max_resolution", 256),
    ("dataset", "bucket_step", 12),
    ("dataset", "repeats", 0),
    ("dataset", "flip", 0.5),
    ("dataset", "caption_extension", "txt"),
    ("dataset", "caption_extension", ".png"),
    ("dataset", "shuffle_tags", "no"),
    ("dataset", "keep_tokens", -1),
    ("dataset", "caption_dropout", 1.1),
    ("dataset", "trigger_word", ""),
    ("dataset", "trigger_word", "a, b"),
    ("eval", "suite", ""),
    ("eval", "seeds", []),
    ("eval", "seeds", [1, -2]),
    ("eval", "cfgs", [7, 0]),
    ("eval", "steps", 0),
    ("eval", "sampler", "warp_drive"),
]


@pytest.mark.parametrize(("section", "key", "value"), INVALID, ids=[f"{s}.{k}={v!r}" for s, k, v in INVALID])
def test_invalid_value_is_refused_naming_key_and_value(section, key, value):
    with pytest.raises(InputError) as raised:
        TrainConfig.from_dict(with_value(section, key, value))
    message = str(raised.value)
    assert f"{section}.{key} " in message
    assert f"got {value!r}" in message


def test_message_reads_like_the_example():
    with pytest.raises(InputError, match=r"train\.learning_rate must be > 0, got -1$"):
        TrainConfig.from_dict(with_value("train", "learning_rate", -1))


def test_unknown_key_and_section_are_refused_by_name(tmp_path):
    with pytest.raises(InputError, match=r"unknown key\(s\) train\.lr\b"):
        load_config(write(tmp_path, FULL.replace("learning_rate = 1e-4", "lr = 1e-4")))
    with pytest.raises(InputError, match=r"unknown section\(s\) \[sampling\]"):
        load_config(write(tmp_path, FULL + "\n[sampling]\nevery = 1\n"))


def test_required_keys_and_sections(tmp_path):
    with pytest.raises(InputError, match=r"model\.base is required"):
        TrainConfig.from_dict({**MINIMAL, "model": {}})
    with pytest.raises(InputError, match=r"missing section \[dataset\]"):
        TrainConfig.from_dict({"model": {"base": "m"}, "train": {"output_dir": "o"}})
    with pytest.raises(InputError, match=r"\[train\] must be a table"):
        TrainConfig.from_dict({**MINIMAL, "train": 3})


def test_toml_syntax_error_and_missing_file_name_the_file(tmp_path):
    path = write(tmp_path, "[model\nbase = 1\n")
    with pytest.raises(InputError, match="invalid TOML") as raised:
        load_config(path)
    assert str(path) in str(raised.value)
    with pytest.raises(InputError, match="cannot read") as raised:
        load_config(tmp_path / "absent.toml")
    assert "absent.toml" in str(raised.value)


def test_value_errors_from_a_file_name_the_file(tmp_path):
    path = write(tmp_path, FULL.replace("epochs = 4", "epochs = 0"))
    with pytest.raises(InputError, match=r"train\.epochs must be >= 1, got 0") as raised:
        load_config(path)
    assert str(raised.value).startswith(str(path))


def test_sections_are_frozen():
    config = TrainConfig.from_dict(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.learning_rate = 1.0  # type: ignore[misc]
