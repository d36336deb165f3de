"""Bad input through the commands users run: one clear line each, nothing lost, the rest goes on."""

import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evalsvc.cli import main


def _copy_with(src: Path, dst: Path, tensors=None, metadata=None) -> Path:
    from evalsvc.checkpoints import read_header

    data = load_file(src) if tensors is None else tensors
    save_file(data, dst, metadata=metadata if metadata is not None else read_header(src).metadata)
    return dst


@pytest.fixture
def bad_folder(tmp_path, sd15_loras):
    folder = tmp_path / "epochs"
    folder.mkdir()
    for path in sd15_loras:
        shutil.copy(path, folder / path.name)
    raw = sd15_loras[0].read_bytes()
    (folder / "truncated-000007.safetensors").write_bytes(raw[: len(raw) // 2])
    (folder / "hugeheader-000008.safetensors").write_bytes(struct.pack("<Q", 10**12) + raw[8:100])
    (folder / "notjson-000009.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops" + b"\0" * 16)
    base = load_file(sd15_loras[0])
    stem = "lora_unet_down_blocks_0_attentions_0_proj_in"
    loha = {f"{stem}.hada_w1_a": torch.zeros(4, 4), f"{stem}.hada_w1_b": torch.zeros(4, 4), f"{stem}.alpha": torch.tensor(1.0)}
    save_file(loha, folder / "loha-000010.safetensors", metadata={"ss_network_module": "lycoris.kohya"})
    lokr = {f"{stem}.lokr_w1": torch.zeros(4, 4), f"{stem}.lokr_w2_a": torch.zeros(8, 2)}
    save_file(lokr, folder / "lokr-000011.safetensors", metadata={"ss_network_module": "lycoris.kohya"})
    dora = dict(base, **{f"{stem}_stray.dora_scale": torch.ones(1, 32)})
    _copy_with(sd15_loras[0], folder / "dora-000012.safetensors", tensors=dora)
    save_file({"some.random.weight": torch.zeros(2)}, folder / "mystery-000013.safetensors")
    return folder


def test_add_refuses_each_bad_file_with_one_line_and_keeps_the_good_ones(tmp_path, sd15_dir, bad_folder, capsys):
    store = tmp_path / "store"
    code = main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(bad_folder),
                 str(tmp_path / "missing-000001.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    expected = {
        "truncated-000007": "truncated", "hugeheader-000008": "header length", "notjson-000009": "JSON",
        "loha-000010": "LoHa module 'lora_unet_down_blocks_0_attentions_0_proj_in' lacks its 'hada_w2_a' tensor",
        "lokr-000011": "lacks its 'lokr_w2_b'", "dora-000012": "has only dora_scale tensors", "mystery-000013": "unrecognised",
        "missing-000001": "not found",
    }
    assert len(err) == len(expected)
    for stem, reason in expected.items():
        line = next(line for line in err if stem in line)
        assert reason.lower() in line.lower(), line
    import json

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["status", "--store", str(store), "--json"])
    assert json.loads(out.getvalue())["runs"][0]["checkpoints"] == 4  # base + the 3 good epochs


def test_lora_for_another_architecture_is_refused_naming_both(tmp_path, sd15_dir, sdxl_loras, capsys):
    code = main(["add", "--store", str(tmp_path / "s"), "--run", "r", "--base", str(sd15_dir), str(sdxl_loras[0])])
    err = capsys.readouterr().err
    assert code == 1
    assert sdxl_loras[0].name in err and "sdxl" in err and "tiny-sd15" in err and "sd15" in err


def test_nan_lora_fails_its_cells_and_the_rest_of_the_grid_completes(tmp_path, sd15_dir, sd15_loras, capsys):
    tensors = load_file(sd15_loras[1])
    key = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[key][0, 0] = float("nan")
    nan_file = _copy_with(sd15_loras[1], tmp_path / "nanlora-000002.safetensors", tensors=tensors)
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), str(sd15_loras[0]), str(nan_file)]) == 0
    code = main(["sample", "--store", str(store), "--run", "r", "--suite", "toy", "--seeds", "1", "--steps", "2",
                 "--size", "64x64", "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    err = captured.err
    assert "nanlora-000002.safetensors" in err and "NaN" in err
    assert (captured.out + err).count("NaN/Inf") == 1, captured  # its failure is told once
    from evalsvc.store import open_store

    with open_store(store) as s:
        states = dict(s.db.execute(
            "SELECT c.file_name || ':' || w.state, count(*) FROM work w JOIN checkpoints c ON c.sha256 = w.checkpoint "
            "GROUP BY 1").fetchall())
        status = dict(s.db.execute("SELECT file_name, status FROM checkpoints").fetchall())
        partial = s.db.execute("SELECT count(*) FROM samples s JOIN work w ON w.key = s.key "
                               "WHERE w.state <> 'done'").fetchone()[0]
    assert states == {"tiny-sd15:done": 4, f"{sd15_loras[0].name}:done": 4, "nanlora-000002.safetensors:failed": 4}
    assert status["nanlora-000002.safetensors"] == "failed"
    assert partial == 0


def test_pickles_are_refused_and_a_malicious_one_never_runs(tmp_path, sd15_dir, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil-000001.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"x": Payload()}}, f, protocol=2)
    for extra in ([], ["--allow-pickle"]):
        code = main(["add", "--store", str(tmp_path / "s"), "--run", "r", str(evil), *extra])
        assert code == 1
        assert "evil-000001.ckpt" in capsys.readouterr().err
        assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    ('name = "empty"\nprompts = []\n', "no prompts"),
])
def test_empty_suite_exits_2_naming_the_file(tmp_path, sd15_dir, content, message, capsys):
    suite = tmp_path / "empty.toml"
    suite.write_text(content)
    main(["add", "--store", str(tmp_path / "s"), "--run", "r", "--base", str(sd15_dir)])
    code = main(["sample", "--store", str(tmp_path / "s"), "--run", "r", "--suite", str(suite), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "empty.toml" in err and message in err


def test_malformed_sample_prompt_line_exits_2_naming_file_and_line(tmp_path, sd15_dir, capsys):
    prompts = tmp_path / "sample_prompts.txt"
    prompts.write_text("# comment\na cat --w 512 --h 512\n\na dog --l abc\n")
    main(["add", "--store", str(tmp_path / "s"), "--run", "r", "--base", str(sd15_dir)])
    code = main(["sample", "--store", str(tmp_path / "s"), "--run", "r", "--suite", str(prompts), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "sample_prompts.txt:4" in err


def test_kohya_prompt_file_values_apply_unless_overridden(tmp_path, sd15_dir):
    prompts = tmp_path / "sample_prompts.txt"
    prompts.write_text("a cat --w 72 --h 64 --d 11 --l 5.5 --s 3 --ss euler_a\n")
    store = tmp_path / "s"
    main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir)])
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(prompts), "--no-progress"]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(prompts), "--cfg", "2",
                 "--seeds", "4", "--no-progress"]) == 0
    from evalsvc.store import open_store

    with open_store(store) as s:
        rows = s.db.execute("SELECT seed, cfg, steps, sampler, width, height FROM work ORDER BY seed").fetchall()
    assert rows == [(4, 2.0, 3, "euler_a", 72, 64), (11, 5.5, 3, "euler_a", 72, 64)]
