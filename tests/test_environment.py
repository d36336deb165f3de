"""The installed environment is the locked one, and `evalsvc doctor` says where it is not."""

from importlib import metadata
from pathlib import Path

import pytest

from evalsvc.cli import main
from evalsvc.errors import InputError
from evalsvc.lockfile import Mismatch, Pin, mismatches, read_lock, source_lock

ROOT = Path(__file__).resolve().parents[1]


def test_installed_versions_match_the_lock():
    """A stale environment cannot pass silently: every package the lock pins for this platform is installed
    at exactly the locked version (`scripts/install` reinstalls the lock)."""
    lock = source_lock()
    assert lock == ROOT / "requirements.lock"
    differing = mismatches(read_lock(lock))
    assert not differing, "the environment differs from requirements.lock (run scripts/install): " + \
        "; ".join(m.describe() for m in differing)


def test_the_lock_pins_the_stack_and_torch_with_its_cuda_wheels():
    pins = {pin.name: pin for pin in read_lock(ROOT / "requirements.lock")}
    for name in ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "open-clip-torch",
                 "torchmetrics", "gradio", "duckdb", "safetensors", "pytest", "playwright", "setuptools"):
        assert name in pins, f"requirements.lock does not pin {name}"
    assert "nvidia-cublas" in pins and "linux" in pins["nvidia-cublas"].marker
    text = (ROOT / "requirements.lock").read_text()
    assert text.count("--hash=sha256:") > len(pins), "every pin carries the sha256 of its files"


def _lock(tmp_path, lines: list[str]) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text("# a lock as uv writes it\n" + "".join(f"{line} \\\n    --hash=sha256:{'0' * 64}\n    # via x\n"
                                                        for line in lines))
    return path


def test_read_lock_takes_names_versions_and_markers(tmp_path):
    pins = read_lock(_lock(tmp_path, ["Open_Clip_Torch==3.3.0", "numpy==2.4.6 ; python_full_version < '3.12'",
                                      "colorama==0.4.6 ; sys_platform == 'win32'"]))
    assert pins[0] == Pin("open-clip-torch", "3.3.0", None)
    assert pins[1].marker == 'python_full_version < "3.12"'
    assert [pin.applies() for pin in pins] == [True, True, False]  # tests run on Python 3.11 under Linux


@pytest.mark.parametrize("line", ["torch>=2.4", "torch", "torch==2.14.1,<3"])
def test_read_lock_refuses_a_line_not_pinned_to_one_version(tmp_path, line):
    with pytest.raises(InputError, match=r"line 2: .* is not pinned to one version"):
        read_lock(_lock(tmp_path, [line]))


def test_mismatches_name_the_package_and_both_versions(tmp_path):
    tqdm = metadata.version("tqdm")
    lock = _lock(tmp_path, ["tqdm==0.0.1", f"duckdb=={metadata.version('duckdb')}", "no-such-package-xyz==1.0",
                            "colorama==0.0.1 ; sys_platform == 'win32'"])
    assert mismatches(read_lock(lock)) == [Mismatch("no-such-package-xyz", "1.0", None),
                                           Mismatch("tqdm", "0.0.1", tqdm)]
    assert Mismatch("tqdm", "0.0.1", tqdm).describe() == f"tqdm {tqdm} is installed; the lock has 0.0.1"


def test_doctor_exits_0_on_the_locked_environment(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "\n  accelerator " in out
    for name in ("Python", "torch", "diffusers", "transformers", "peft", "accelerate",
                 "open-clip-torch", "torchmetrics", "gradio", "duckdb"):
        assert f"\n{name} " in out, f"doctor's table has no {name} row"
    assert f"transformers     {metadata.version('transformers')}" in out
    assert "CLIP toy (--backbone toy)" in out and "present" in out
    assert "hf download yuvalkirstain/PickScore_v1" in out  # missing optional weights: listed with their fetch command
    assert out.rstrip().endswith("0 problems: this environment is usable")


def test_doctor_names_a_version_mismatch_and_a_missing_weight_file(tmp_path, capsys):
    real = (ROOT / "requirements.lock").read_text()
    transformers, tqdm = metadata.version("transformers"), metadata.version("tqdm")
    stale = real.replace(f"\ntransformers=={transformers} ", "\ntransformers==4.44.0 ") \
                .replace(f"\ntqdm=={tqdm} ", "\ntqdm==4.0.0 ")
    assert stale.count("==4.44.0") == 1 and stale.count("tqdm==4.0.0") == 1
    lock = tmp_path / "requirements.lock"
    lock.write_text(stale)
    empty = tmp_path / "pickscore"
    empty.mkdir()
    code = main(["doctor", "--lock", str(lock), "--aesthetic-weights", str(tmp_path / "head.safetensors"),
                 "--pickscore-weights", str(empty)])
    out = capsys.readouterr().out
    assert code == 1
    problems = out.split("problems:\n", 1)[1].splitlines()
    assert problems == [
        f"  transformers {transformers} is installed; the lock has 4.44.0",
        f"  tqdm {tqdm} is installed; the lock has 4.0.0",
        f"  --aesthetic-weights: aesthetic head {tmp_path / 'head.safetensors'} does not exist",
        f"  --pickscore-weights: {empty} has no config.json; run `hf download yuvalkirstain/PickScore_v1` on a "
        "connected machine or pass --pickscore-weights DIR",
    ]
    assert "differs from the lock" in out


def test_doctor_reads_a_real_aesthetic_head(tmp_path, capsys):
    from safetensors.numpy import save_file
    import numpy as np

    sizes = [768, 1024, 128, 64, 16, 1]
    layers = ["layers.0", "layers.2", "layers.4", "layers.6", "layers.7"]
    tensors = {}
    for name, (n_in, n_out) in zip(layers, zip(sizes, sizes[1:])):
        tensors[f"{name}.weight"] = np.zeros((n_out, n_in), np.float32)
        tensors[f"{name}.bias"] = np.zeros(n_out, np.float32)
    save_file(tensors, str(tmp_path / "head.safetensors"))
    assert main(["doctor", "--aesthetic-weights", str(tmp_path / "head.safetensors")]) == 0
    assert f"{tmp_path / 'head.safetensors'}  present" in capsys.readouterr().out
