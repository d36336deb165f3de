"""`evalsvc add` on the folders trainers write: diffusers/accelerate `checkpoint-N/`, OneTrainer workspaces,
pipelines; training state skipped with one line, generic file names told apart, and the EMA flag changed.

The folders are written by the tools' own code (accelerate's `save_state`, diffusers' `save_lora_weights`,
`save_pretrained` and `EMAModel`), as diffusers' train_text_to_image(_lora).py scripts call them.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli
from evalsvc.checkpoints.naming import NameInfo, checkpoint_file_name, parse_checkpoint_name
from evalsvc.cli import main

STEPS = (2, 4)  # --checkpointing_steps=2 --max_train_steps=5
TOTAL = 5


def _rows(store, run="r"):
    from evalsvc.catalog import run_checkpoints
    from evalsvc.store import open_store

    with open_store(store) as s:
        return {r.file_name: (r.kind, r.epoch, r.step, r.ema) for r in run_checkpoints(s.db, run) if r.role != "base"}


def _train(out, model, params, save_hook, steps=STEPS, after_step=None):
    """TOTAL optimizer steps of `params` (in `model`) under accelerate, `save_state` into checkpoint-<step>/ at each
    of `steps`, as diffusers' training scripts do (their save hook writes the weights, accelerate the state)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(out)))
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: save_hook(
        accelerator.unwrap_model(models[0]), weights, output_dir))
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for step in range(1, TOTAL + 1):
        loss = sum(p.sum() for p in params)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if after_step:
            after_step()
        if step in steps:
            accelerator.save_state(str(out / f"checkpoint-{step}"))
    AcceleratorState._reset_state(True)
    return accelerator.unwrap_model(model)


@pytest.fixture(scope="module")
def lora_output(sd15_dir, tmp_path_factory):
    """train_text_to_image_lora.py's output folder: checkpoint-2/, checkpoint-4/ and the final LoRA."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out = tmp_path_factory.mktemp("lora-run") / "sd-lora-output"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(sd15_dir / "unet")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]

    def save_lora(model, output_dir):
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=layers, safe_serialization=True)

    def hook(model, weights, output_dir):
        save_lora(model, output_dir)
        weights.pop()  # the script saved the model itself: accelerate writes only the training state

    unet = _train(out, unet, params, hook)
    save_lora(unet, out)  # the final weights, in the output folder itself
    return out


@pytest.fixture(scope="module")
def finetune_output(sd15_dir, tmp_path_factory):
    """train_text_to_image.py --use_ema's output folder: checkpoint-N/{unet,unet_ema}/ and the final pipeline."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    out = tmp_path_factory.mktemp("full-run") / "sd-finetune-output"
    unet = UNet2DConditionModel.from_pretrained(sd15_dir / "unet")
    ema = EMAModel(unet.parameters(), model_cls=UNet2DConditionModel, model_config=unet.config)

    def hook(model, weights, output_dir):
        ema.save_pretrained(f"{output_dir}/unet_ema")
        model.save_pretrained(f"{output_dir}/unet")
        weights.pop()

    unet = _train(out, unet, list(unet.parameters()), hook, after_step=lambda: ema.step(unet.parameters()))
    ema.copy_to(unet.parameters())
    pipe = StableDiffusionPipeline.from_pretrained(sd15_dir, unet=unet, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.save_pretrained(out)
    return out


def test_accelerate_lora_run_registers_each_checkpoint_by_step_and_skips_its_state(tmp_path, sd15_dir, lora_output):
    state = sorted(p.name for p in (lora_output / "checkpoint-2").iterdir())
    assert state == ["optimizer.bin", "pytorch_lora_weights.safetensors", "random_states_0.pkl", "scheduler.bin"]
    store = tmp_path / "store"
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(lora_output)])
    assert code == 0, out
    assert _rows(store) == {
        "checkpoint-2.safetensors": ("lora", None, 2, False),
        "checkpoint-4.safetensors": ("lora", None, 4, False),
        "sd-lora-output.safetensors": ("lora", None, None, False),
    }
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert skipped == ["skipped 6 training-state files (optimizer, scheduler, RNG) in 2 folders: saved for resuming "
                       "training, not checkpoints"]
    assert "refused" not in out.replace("0 refused", "")
    added = next(line for line in out.splitlines() if line.startswith("added  checkpoint-4.safetensors"))
    assert "checkpoint-4/pytorch_lora_weights.safetensors" in added and "step 4" in added


def test_a_state_file_named_alone_is_refused_as_training_state(tmp_path, lora_output, capsys):
    code = main(["add", "--store", str(tmp_path / "s"), "--run", "r", str(lora_output / "checkpoint-2" /
                                                                         "optimizer.bin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "optimizer.bin" in err[0] and "training state (optimizer)" in err[0] and "pickle" not in err[0]


def test_generic_file_names_get_their_folder_name_in_infotext_and_lora_hashes(tmp_path, sd15_dir, lora_output):
    from evalsvc.store import open_store

    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir),
                 str(lora_output / "checkpoint-2")]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", "toy", "--seeds", "1", "--steps", "2",
                 "--size", "64x64", "--no-progress"]) == 0
    with open_store(store) as s:
        texts = [t for t, in s.db.execute(
            "SELECT s.infotext FROM samples s JOIN work w ON w.key = s.key JOIN checkpoints c "
            "ON c.sha256 = w.checkpoint WHERE c.kind = 'lora'").fetchall()]
        addnet = s.db.execute("SELECT addnet_hash FROM checkpoints WHERE kind = 'lora'").fetchone()[0]
    assert len(texts) == 4
    for text in texts:
        assert "<lora:checkpoint-2:1>" in text
        assert f'Lora hashes: "checkpoint-2: {addnet[:12]}"' in text
        assert "pytorch_lora_weights" not in text


def test_a_store_row_with_a_generic_name_is_renamed_when_added_again(tmp_path, sd15_dir, lora_output):
    from evalsvc.store import open_store

    store = tmp_path / "store"
    lora = lora_output / "checkpoint-4" / "pytorch_lora_weights.safetensors"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(lora)]) == 0
    with open_store(store) as s:  # as an older evalsvc recorded it
        s.db.execute("UPDATE checkpoints SET file_name = 'pytorch_lora_weights.safetensors' WHERE kind = 'lora'")
    assert main(["add", "--store", str(store), "--run", "r", str(lora)]) == 0
    assert list(_rows(store)) == ["checkpoint-4.safetensors"]


def test_finetune_run_registers_raw_and_ema_unets_per_step_and_the_final_pipeline(tmp_path, sd15_dir,
                                                                                  finetune_output):
    from evalsvc.checkpoints.hashing import sha256_folder

    assert {p.name for p in (finetune_output / "checkpoint-4").iterdir()} == {
        "unet", "unet_ema", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"}
    store = tmp_path / "store"
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(finetune_output)])
    assert code == 0, out
    assert _rows(store) == {
        "checkpoint-2.safetensors": ("unet", None, 2, False),
        "checkpoint-2-ema.safetensors": ("unet", None, 2, True),
        "checkpoint-4.safetensors": ("unet", None, 4, False),
        "checkpoint-4-ema.safetensors": ("unet", None, 4, True),
        "sd-finetune-output": ("diffusers", None, None, False),
    }
    assert "skipped 6 training-state files (optimizer, scheduler, RNG) in 2 folders" in out
    # The final pipeline is the same content whether or not the checkpoints beside it are still there.
    copy = tmp_path / "sd-finetune-output"
    shutil.copytree(finetune_output, copy, ignore=shutil.ignore_patterns("checkpoint-*"))
    assert sha256_folder(copy) == sha256_folder(finetune_output)


def test_checkpoint_with_a_trained_text_encoder_is_refused_whole(tmp_path, sd15_pipe, sd15_dir, finetune_output,
                                                                  capsys):
    folder = tmp_path / "dreambooth" / "checkpoint-6"
    shutil.copytree(finetune_output / "checkpoint-4", folder)
    sd15_pipe.text_encoder.save_pretrained(folder / "text_encoder")
    code = main(["add", "--store", str(tmp_path / "s"), "--run", "r", "--base", str(sd15_dir), str(folder.parent)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert str(folder) in err[0] and "text_encoder/" in err[0] and "unrecognised" not in err[0]
    assert _rows(tmp_path / "s") == {}


def test_pipeline_folder_without_model_index_is_one_refusal(tmp_path, sd15_dir, capsys):
    broken = tmp_path / "exported" / "my-finetune"
    shutil.copytree(sd15_dir, broken)
    (broken / "model_index.json").unlink()
    code = main(["add", "--store", str(tmp_path / "s"), "--run", "r", "--base", str(sd15_dir), str(broken.parent)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 1 and len(err) == 1, captured
    assert str(broken) in err[0] and "no model_index.json" in err[0]
    assert "unet/" in err[0] and "vae/" in err[0] and "text_encoder/" in err[0]
    assert "unrecognised" not in captured.out + captured.err
    assert _rows(tmp_path / "s") == {}  # its bare UNet is not registered either


def _onetrainer_workspace(root, sd15_loras):
    """A OneTrainer LoRA workspace: saves in save/, a resumable backup in backup/, config, samples, tensorboard."""
    meta = {"modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.sai_model_spec": "1.0.0",
            "modelspec.title": "mychar"}
    (root / "save").mkdir(parents=True)
    save_file(load_file(sd15_loras[0]), root / "save" / "mychar2024-05-01_12-30-45-save-120-1-0.safetensors",
              metadata=meta)
    save_file(load_file(sd15_loras[1]), root / "save" / "mychar2024-05-01_12-41-02-save-240-2-0.safetensors",
              metadata=meta)
    backup = root / "backup" / "2024-05-01_12-35-10-backup-180-1-60"
    (backup / "lora").mkdir(parents=True)
    save_file(load_file(sd15_loras[2]), backup / "lora" / "lora.safetensors", metadata=meta)
    (backup / "optimizer").mkdir()
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    weight.sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), backup / "optimizer" / "optimizer.pt")
    (backup / "meta.json").write_text(json.dumps({"train_progress": {"epoch": 1, "epoch_step": 60,
                                                                      "epoch_sample": 60, "global_step": 180}}))
    (backup / "onetrainer_config").mkdir()
    (backup / "onetrainer_config" / "args.json").write_text("{}")
    (root / "config").mkdir()
    (root / "config" / "mychar2024-05-01_12-20-00.json").write_text("{}")
    (root / "samples" / "0 - a red circle").mkdir(parents=True)
    (root / "samples" / "0 - a red circle" / "mychar2024-05-01_12-30-45-training-sample-120-1-0.png").write_bytes(
        b"\x89PNG")
    (root / "tensorboard" / "mychar2024-05-01_12-20-00").mkdir(parents=True)
    (root / "tensorboard" / "mychar2024-05-01_12-20-00" / "events.out.tfevents.1714566000.host").write_bytes(b"")
    return root


def test_onetrainer_workspace_registers_its_saves_and_skips_its_backup(tmp_path, sd15_dir, sd15_loras):
    workspace = _onetrainer_workspace(tmp_path / "workspace" / "mychar", sd15_loras)
    store = tmp_path / "store"
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(workspace)])
    assert code == 0, out
    assert _rows(store) == {
        "mychar2024-05-01_12-30-45-save-120-1-0.safetensors": ("lora", 1, 120, False),
        "mychar2024-05-01_12-41-02-save-240-2-0.safetensors": ("lora", 2, 240, False),
    }
    assert [line for line in out.splitlines() if "skipped" in line] == [
        "skipped 1 resume-state folder (kohya -state, OneTrainer backup): saved for resuming training, "
        "not checkpoints"]
    code = main(["add", "--store", str(store), "--run", "r", str(workspace / "backup" /
                                                                 "2024-05-01_12-35-10-backup-180-1-60")])
    assert code == 1  # named on its own: refused as what it is


def test_ema_flag_of_a_registered_checkpoint_changes_with_one_line_keeping_its_samples(tmp_path, sd15_dir,
                                                                                       sd15_loras):
    from evalsvc.store import open_store

    store = tmp_path / "store"
    lora = str(sd15_loras[0])
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), lora]) == 0
    grid = ["sample", "--store", str(store), "--run", "r", "--suite", "toy", "--seeds", "1", "--steps", "2",
            "--size", "64x64", "--no-progress"]
    assert main(grid) == 0

    def stored():
        with open_store(store) as s:
            row = s.db.execute("SELECT ema, epoch, step, metadata FROM checkpoints WHERE kind = 'lora'").fetchone()
            return row, s.db.execute("SELECT count(*) FROM samples").fetchone()[0]

    (_, epoch, step, metadata), samples = stored()
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--ema", lora])
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("known")] == [
        f"known  {sd15_loras[0].name}: now marked EMA (was raw) [{_sha(store)[:12]}]"]
    assert stored() == ((True, epoch, step, metadata), samples)
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--ema", lora])
    assert "same content as a registered checkpoint" in out and "now marked" not in out
    code, out = run_cli(["add", "--store", str(store), "--run", "r", "--no-ema", lora])
    assert "now marked raw (was EMA)" in out
    assert stored() == ((False, epoch, step, metadata), samples)
    code, out = run_cli(grid)
    assert code == 0 and "sampled 0 now" in out  # its images are still its own


def _sha(store):
    from evalsvc.store import open_store

    with open_store(store) as s:
        return s.db.execute("SELECT sha256 FROM checkpoints WHERE kind = 'lora'").fetchone()[0]


@pytest.mark.parametrize("relative,expected", [
    ("out/checkpoint-500/pytorch_lora_weights.safetensors", "checkpoint-500.safetensors"),
    ("out/checkpoint-500/unet/diffusion_pytorch_model.safetensors", "checkpoint-500.safetensors"),
    ("out/checkpoint-500/unet_ema/diffusion_pytorch_model.safetensors", "checkpoint-500-ema.safetensors"),
    ("out/checkpoint-500/unet/diffusion_pytorch_model.fp16.safetensors", "checkpoint-500.safetensors"),
    ("my-lora/adapter_model.safetensors", "my-lora.safetensors"),
    ("mychar-000004.safetensors", "mychar-000004.safetensors"),
    ("out/model_1.safetensors", "model_1.safetensors"),
])
def test_checkpoint_file_name(tmp_path, relative, expected):
    assert checkpoint_file_name(tmp_path / relative) == expected


def test_checkpoint_folder_name_gives_the_step():
    assert parse_checkpoint_name("checkpoint-500") == NameInfo("", None, 500, False, "diffusers")
    assert parse_checkpoint_name("checkpoint-500-ema") == NameInfo("", None, 500, True, "diffusers")
    assert parse_checkpoint_name("checkpoint_3").step is None  # accelerate's automatic naming counts saves
