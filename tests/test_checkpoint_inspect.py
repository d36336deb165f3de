"""Checkpoint reading, hashing, naming and detection, on tiny synthetic files with realistic keys."""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from evalsvc.checkpoints import check_finite, inspect_checkpoint, load_tensors, read_header, sha256_file
from evalsvc.checkpoints.hashing import addnet_hash, sha256_file_and_data, sha256_folder
from evalsvc.checkpoints.naming import NameInfo, parse_checkpoint_name
from evalsvc.checkpoints.pickled import load_pickled
from evalsvc.errors import CheckpointError

# ---------------------------------------------------------------- builders

SD15_UNET_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
SD15_UNET_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
SD15_TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
SDXL_UNET_K = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
SDXL_TE1_Q = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
SDXL_TE2_Q = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"


def kohya_metadata(**overrides) -> dict[str, str]:
    """The ss_* keys kohya's train_network.py writes (all strings)."""
    meta = {
        "ss_session_id": "1234567890",
        "ss_output_name": "mychar",
        "ss_training_started_at": "1714566645.0",
        "ss_learning_rate": "0.0001",
        "ss_unet_lr": "0.0001",
        "ss_text_encoder_lr": "5e-05",
        "ss_optimizer": "bitsandbytes.optim.adamw.AdamW8bit",
        "ss_lr_scheduler": "cosine",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_network_alpha": "1.0",
        "ss_num_train_images": "40",
        "ss_num_epochs": "10",
        "ss_max_train_steps": "1000",
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_clip_skip": "2",
        "ss_mixed_precision": "fp16",
        "ss_seed": "42",
        "ss_resolution": "(512, 512)",
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_tag_frequency": json.dumps({"10_mychar": {"mychar": 40, "1girl": 38}}),
        "ss_datasets": json.dumps([{"is_dreambooth": True, "batch_size_per_device": 2}]),
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def lora_module(prefix: str, in_features: int, out_features: int, rank: int = 2) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.lora_down.weight": torch.randn(rank, in_features, dtype=torch.float16),
        f"{prefix}.lora_up.weight": torch.zeros(out_features, rank, dtype=torch.float16),
        f"{prefix}.alpha": torch.tensor(1.0, dtype=torch.float16),
    }


def kohya_sd15_lora() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return lora_module(SD15_UNET_Q, 320, 320) | lora_module(SD15_UNET_K, 768, 320) | lora_module(SD15_TE_Q, 768, 768)


def kohya_sdxl_lora() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return lora_module(SDXL_UNET_K, 2048, 640) | lora_module(SDXL_TE1_Q, 768, 768) | lora_module(SDXL_TE2_Q, 1280, 1280)


def peft_lora(text_encoder_2: bool = False, width: int = 768) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    unet = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    sd = {
        f"{unet}.to_k.lora_A.weight": torch.randn(2, width),
        f"{unet}.to_k.lora_B.weight": torch.zeros(640, 2),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(2, 768),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(768, 2),
    }
    if text_encoder_2:
        sd["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(2, 1280)
        sd["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(1280, 2)
    return sd


def small(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.float16)


def ldm_unet(sdxl: bool) -> dict[str, torch.Tensor]:
    width = 2048 if sdxl else 768
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": small(8, 4, 3, 3),
        "model.diffusion_model.time_embed.0.weight": small(8, 8),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": small(8, width),
        "model.diffusion_model.out.2.weight": small(4, 8, 3, 3),
    }
    if sdxl:
        sd["model.diffusion_model.label_emb.0.0.weight"] = small(8, 2816)
    return sd


def single_file(arch: str) -> dict[str, torch.Tensor]:
    sd = {**ldm_unet(arch == "sdxl"), "first_stage_model.decoder.conv_in.weight": small(8, 4, 3, 3)}
    if arch == "sd15":
        sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = small(16, 8)
    elif arch == "sdxl":
        sd["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] = small(16, 8)
        sd["conditioner.embedders.1.model.token_embedding.weight"] = small(16, 8)
    elif arch == "sd2":
        sd["cond_stage_model.model.token_embedding.weight"] = small(16, 8)
    return sd


def diffusers_unet(sdxl: bool) -> dict[str, torch.Tensor]:
    width = 2048 if sdxl else 768
    sd = {
        "conv_in.weight": small(8, 4, 3, 3),
        "time_embedding.linear_1.weight": small(8, 8),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": small(8, width),
        "conv_out.weight": small(4, 8, 3, 3),
    }
    if sdxl:
        sd["add_embedding.linear_1.weight"] = small(8, 2816)
    return sd


def save(path: pathlib.Path, tensors: dict, metadata: dict | None = None) -> pathlib.Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def raw_safetensors(path: pathlib.Path, header, data: bytes = b"", length: int | None = None) -> pathlib.Path:
    """Write a file by hand, header and all, to build inputs the library would refuse to write."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return path


def reason(excinfo) -> str:
    return excinfo.value.reason


# ---------------------------------------------------------------- detection

def test_kohya_sd15_lora_epoch_from_name(tmp_path):
    path = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora(), kohya_metadata())
    info = inspect_checkpoint(path)
    assert (info.kind, info.arch, info.lora_format) == ("lora", "sd15", "kohya")
    assert (info.epoch, info.step, info.ema) == (4, None, False)
    assert info.metadata["ss_network_dim"] == "4" and info.metadata["ss_output_name"] == "mychar"
    assert info.path == path


def test_kohya_sd15_lora_without_metadata_uses_keys(tmp_path):
    path = save(tmp_path / "mychar-step00001200.safetensors", kohya_sd15_lora())
    info = inspect_checkpoint(path)
    assert (info.kind, info.arch, info.epoch, info.step) == ("lora", "sd15", None, 1200)
    assert info.metadata == {}


def test_kohya_sdxl_lora_with_sgm_names(tmp_path):
    meta = kohya_metadata(ss_base_model_version="sdxl_base_v1-0", **{
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora", "modelspec.sai_model_spec": "1.0.0"})
    info = inspect_checkpoint(save(tmp_path / "mychar.safetensors", kohya_sdxl_lora(), meta))
    assert (info.kind, info.arch, info.lora_format, info.epoch) == ("lora", "sdxl", "kohya", None)
    assert info.metadata["modelspec.architecture"].startswith("stable-diffusion-xl")


def test_kohya_sdxl_lora_keys_alone_say_sdxl(tmp_path):
    unet_only = lora_module("lora_unet_output_blocks_1_1_transformer_blocks_0_attn1_to_q", 1280, 1280)
    assert inspect_checkpoint(save(tmp_path / "last.safetensors", unet_only)).arch == "sdxl"


@pytest.mark.parametrize("sdxl", [False, True])
def test_peft_lora(tmp_path, sdxl):
    tensors = peft_lora(text_encoder_2=sdxl, width=2048 if sdxl else 768)
    info = inspect_checkpoint(save(tmp_path / "pytorch_lora_weights.safetensors", tensors))
    assert (info.kind, info.arch, info.lora_format) == ("lora", "sdxl" if sdxl else "sd15", "peft")


def test_peft_lora_with_base_model_prefix(tmp_path):
    tensors = {f"unet.base_model.model.{k[len('unet.'):]}" if k.startswith("unet.") else k: v
               for k, v in peft_lora().items()}
    info = inspect_checkpoint(save(tmp_path / "adapter.safetensors", tensors))
    assert (info.kind, info.arch, info.lora_format) == ("lora", "sd15", "peft")


def test_onetrainer_name_gives_epoch_and_step(tmp_path):
    meta = {"modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.sai_model_spec": "1.0.0"}
    path = save(tmp_path / "mymodel2024-05-01_12-30-45-save-1200-4-0.safetensors", kohya_sd15_lora(), meta)
    info = inspect_checkpoint(path)
    assert (info.kind, info.arch, info.epoch, info.step) == ("lora", "sd15", 4, 1200)


def test_metadata_epoch_and_steps_override_the_name(tmp_path):
    path = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora(), kohya_metadata(ss_epoch="7", ss_steps="700"))
    info = inspect_checkpoint(path)
    assert (info.epoch, info.step) == (7, 700)


def test_bad_metadata_epoch_names_the_key(tmp_path):
    path = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora(), kohya_metadata(ss_epoch="four"))
    with pytest.raises(CheckpointError, match="ss_epoch") as e:
        inspect_checkpoint(path)
    assert "'four'" in reason(e)


def test_ema_from_name_flag_and_metadata(tmp_path):
    by_name = save(tmp_path / "mychar-ema-000004.safetensors", kohya_sd15_lora())
    plain = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora())
    flagged = save(tmp_path / "mychar-000005.safetensors", kohya_sd15_lora(), {"evalsvc.ema": "true"})
    assert inspect_checkpoint(by_name).ema and inspect_checkpoint(by_name).epoch == 4
    assert not inspect_checkpoint(plain).ema
    assert inspect_checkpoint(plain, ema=True).ema
    assert not inspect_checkpoint(by_name, ema=False).ema
    assert inspect_checkpoint(flagged).ema
    cinema = save(tmp_path / "cinema-000004.safetensors", kohya_sd15_lora())
    assert not inspect_checkpoint(cinema).ema


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_single_file_full_model(tmp_path, arch):
    info = inspect_checkpoint(save(tmp_path / f"{arch}-finetune-000002.safetensors", single_file(arch)))
    assert (info.kind, info.arch, info.lora_format, info.epoch) == ("full", arch, None, 2)


@pytest.mark.parametrize("sdxl", [False, True])
def test_unet_only(tmp_path, sdxl):
    arch = "sdxl" if sdxl else "sd15"
    ldm = inspect_checkpoint(save(tmp_path / "ldm.safetensors", ldm_unet(sdxl)))
    diffusers = inspect_checkpoint(save(tmp_path / "diffusion_pytorch_model.safetensors", diffusers_unet(sdxl)))
    assert (ldm.kind, ldm.arch) == ("unet", arch)
    assert (diffusers.kind, diffusers.arch) == ("unet", arch)


def make_diffusers_folder(root: pathlib.Path, class_name: str, cross_attention_dim: int = 2048) -> pathlib.Path:
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.42.1",
                                                       "unet": ["diffusers", "UNet2DConditionModel"]}))
    (root / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim}))
    save(root / "unet" / "diffusion_pytorch_model.safetensors", diffusers_unet(cross_attention_dim == 2048))
    return root


def test_diffusers_folder(tmp_path):
    folder = make_diffusers_folder(tmp_path / "mymodel-000003", "StableDiffusionXLPipeline")
    info = inspect_checkpoint(folder)
    assert (info.kind, info.arch, info.lora_format, info.epoch) == ("diffusers", "sdxl", None, 3)
    assert (info.metadata, info.addnet_hash) == ({}, None)
    assert info.sha256 == sha256_folder(folder)
    sd15 = make_diffusers_folder(tmp_path / "sd15", "StableDiffusionPipeline", cross_attention_dim=768)
    assert inspect_checkpoint(sd15).arch == "sd15"


# ---------------------------------------------------------------- refusals

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as e:
        inspect_checkpoint(tmp_path / "nope.safetensors")
    assert str(e.value) == f"{tmp_path / 'nope.safetensors'}: file not found"


def test_truncated_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert reason(e) == "truncated: 3 bytes, not a safetensors file"


def test_header_length_larger_than_file(tmp_path):
    path = raw_safetensors(tmp_path / "x.safetensors", b"{}", length=1_000_000)
    with pytest.raises(CheckpointError) as e:
        read_header(path)
    assert reason(e) == "header length 1000000 is larger than the file (10 bytes)"


def test_non_json_header(tmp_path):
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        inspect_checkpoint(raw_safetensors(tmp_path / "x.safetensors", b"not json at all"))
    with pytest.raises(CheckpointError, match="not UTF-8"):
        read_header(raw_safetensors(tmp_path / "y.safetensors", b"\xff\xfe{}"))
    with pytest.raises(CheckpointError, match="expected an object"):
        read_header(raw_safetensors(tmp_path / "z.safetensors", b"[1, 2]"))


def test_truncated_data_area(tmp_path):
    path = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora())
    full = path.read_bytes()
    path.write_bytes(full[:-10])
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert reason(e) == f"truncated: tensor data ends at byte {len(full)} but file has {len(full) - 10}"


F32_PAIR = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data, message", [
    ({"__metadata__": {"ss_epoch": 4}, "a": F32_PAIR}, bytes(8), "__metadata__ value for 'ss_epoch' is int"),
    ({"a": {**F32_PAIR, "dtype": "F128"}}, bytes(8), "tensor 'a': unknown dtype 'F128'"),
    ({"a": {**F32_PAIR, "shape": [2, -1]}}, bytes(8), "tensor 'a': shape [2, -1] is not a list"),
    ({"a": {**F32_PAIR, "data_offsets": [0, 6]}}, bytes(8), "hold 6 bytes but F32 [2] needs 8"),
    ({"a": {**F32_PAIR, "data_offsets": [8, 0]}}, bytes(8), "end before they begin"),
    ({"a": F32_PAIR, "b": F32_PAIR}, bytes(8), "overlaps the previous tensor"),
    ({"a": {**F32_PAIR, "data_offsets": [4, 12]}}, bytes(12), "leaves a gap before it"),
    ({"a": F32_PAIR}, bytes(9), "1 unexpected bytes after the tensor data"),
    ({"a": F32_PAIR, "__metadata__": {}, "a ": F32_PAIR}, bytes(8), "overlaps"),
    (b'{"a": 1, "a": 2}', b"", "duplicate key 'a'"),
])
def test_header_validation(tmp_path, header, data, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_header(raw_safetensors(tmp_path / "x.safetensors", header, data))


def test_read_header_accepts_a_valid_file(tmp_path):
    path = save(tmp_path / "a.safetensors", {"w": torch.ones(2, 3)}, {"k": "v"})
    header = read_header(path)
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert header.data_offset == 8 + length
    assert header.metadata == {"k": "v"}
    entry = header.tensors["w"]
    assert (entry.dtype, entry.shape, entry.end - entry.begin) == ("F32", (2, 3), 24)


def test_nan_weights(tmp_path):
    tensors = kohya_sd15_lora()
    tensors[f"{SD15_TE_Q}.lora_down.weight"][0, :2] = float("nan")
    tensors[f"{SD15_TE_Q}.lora_down.weight"][1, 0] = float("inf")
    path = save(tmp_path / "mychar-000004.safetensors", tensors)
    loaded = load_tensors(path)
    with pytest.raises(CheckpointError) as e:
        check_finite(path, loaded)
    assert reason(e) == f"tensor '{SD15_TE_Q}.lora_down.weight' has 3 NaN/Inf values"
    check_finite(path, load_tensors(save(tmp_path / "ok.safetensors", kohya_sd15_lora())))


def test_load_tensors_roundtrip_and_wraps_library_errors(tmp_path, monkeypatch):
    tensors = kohya_sd15_lora()
    path = save(tmp_path / "mychar-000004.safetensors", tensors)
    loaded = load_tensors(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated\nlibrary failure")

    monkeypatch.setattr("safetensors.torch.load_file", broken)
    with pytest.raises(CheckpointError, match="cannot load tensors: simulated library failure"):
        load_tensors(path)


def lycoris(kind: str) -> dict[str, torch.Tensor]:
    names = {"loha": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"], "lokr": ["lokr_w1", "lokr_w2"]}[kind]
    return {f"{SD15_UNET_Q}.{n}": small(2, 2) for n in names} | {f"{SD15_UNET_Q}.alpha": torch.tensor(1.0)}


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_files_are_kohya_style_adapters(tmp_path, kind):
    meta = kohya_metadata(ss_network_module="lycoris.kohya")
    info = inspect_checkpoint(save(tmp_path / "mychar-000004.safetensors", lycoris(kind), meta))
    assert (info.kind, info.arch, info.lora_format, info.epoch) == ("lora", "sd15", "kohya", 4)


def test_kohya_dora_is_an_adapter(tmp_path):
    tensors = kohya_sd15_lora() | {f"{SD15_UNET_Q}.dora_scale": small(320, 1)}
    assert inspect_checkpoint(save(tmp_path / "mychar-000004.safetensors", tensors)).lora_format == "kohya"


def test_kohya_style_files_with_unknown_mixed_or_unpaired_tensors_refused(tmp_path):
    odd = kohya_sd15_lora() | {f"{SD15_UNET_Q}.lora_extra.weight": small(2, 2)}
    with pytest.raises(CheckpointError, match=f"unsupported adapter tensor '{SD15_UNET_Q}.lora_extra.weight'"):
        inspect_checkpoint(save(tmp_path / "a.safetensors", odd))
    mixed = kohya_sd15_lora() | {f"{SD15_UNET_Q}.hada_w1_a": small(2, 2)}
    with pytest.raises(CheckpointError, match=f"'{SD15_UNET_Q}' mixes LoRA and LoHa tensors"):
        inspect_checkpoint(save(tmp_path / "m.safetensors", mixed))
    unpaired = {k: v for k, v in kohya_sd15_lora().items() if k != f"{SD15_TE_Q}.lora_up.weight"}
    with pytest.raises(CheckpointError, match=f"LoRA module '{SD15_TE_Q}' lacks its 'lora_up.weight' tensor"):
        inspect_checkpoint(save(tmp_path / "b.safetensors", unpaired))
    kohya_oft = {"oft_unet_down_blocks_0_attentions_0_proj_in.oft_blocks": small(8, 4, 4)}
    with pytest.raises(CheckpointError, match="kohya sd-scripts OFT network .* is not supported"):
        inspect_checkpoint(save(tmp_path / "k.safetensors", kohya_oft, kohya_metadata()))
    full = {f"{SD15_UNET_Q}.diff": small(320, 320)}
    with pytest.raises(CheckpointError, match=r"unsupported adapter tensor '.*\.diff'"):
        inspect_checkpoint(save(tmp_path / "f.safetensors", full, kohya_metadata()))
    oft_dora = {f"{SD15_UNET_Q}.oft_blocks": small(8, 4, 4), f"{SD15_UNET_Q}.dora_scale": small(32, 1)}
    with pytest.raises(CheckpointError, match="dora_scale on OFT, which DoRA does not decompose"):
        inspect_checkpoint(save(tmp_path / "o.safetensors", oft_dora, kohya_metadata()))


def test_unknown_keys(tmp_path):
    path = save(tmp_path / "model.safetensors", {"encoder.layer.0.weight": small(2, 2), "head.bias": small(2)})
    with pytest.raises(CheckpointError) as e:
        inspect_checkpoint(path)
    assert reason(e) == "unrecognised key format (first keys: encoder.layer.0.weight, head.bias)"


def test_sd2_refused(tmp_path):
    lora = save(tmp_path / "a.safetensors", kohya_sd15_lora(), kohya_metadata(ss_base_model_version="sd_v2"))
    with pytest.raises(CheckpointError, match=r"SD2 .*not supported \(sd15 and sdxl are\)"):
        inspect_checkpoint(lora)
    with pytest.raises(CheckpointError, match=r"SD2 .*not supported \(sd15 and sdxl are\)"):
        inspect_checkpoint(save(tmp_path / "b.safetensors", single_file("sd2")))
    wide = {k: (small(8, 1024) if "attn2" in k else v) for k, v in ldm_unet(False).items()}
    with pytest.raises(CheckpointError, match="SD2"):
        inspect_checkpoint(save(tmp_path / "c.safetensors", wide))
    folder = make_diffusers_folder(tmp_path / "sd2", "StableDiffusionPipeline", cross_attention_dim=1024)
    with pytest.raises(CheckpointError, match="SD2"):
        inspect_checkpoint(folder)


def test_conflicting_arch_evidence_refused(tmp_path):
    path = save(tmp_path / "a.safetensors", kohya_sdxl_lora(), kohya_metadata(ss_base_model_version="sd_v1"))
    with pytest.raises(CheckpointError, match="conflicting base model evidence: metadata say sd15"):
        inspect_checkpoint(path)


def test_other_bad_inputs(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="unsupported file type '.gguf'"):
        inspect_checkpoint(tmp_path / "model.gguf")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        inspect_checkpoint(tmp_path / "plain")
    flux = tmp_path / "flux"
    flux.mkdir()
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(CheckpointError, match="'FluxPipeline' is not an SD1.5 or SDXL pipeline"):
        inspect_checkpoint(flux)
    no_vae = {k: v for k, v in single_file("sd15").items() if not k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointError, match="no VAE"):
        inspect_checkpoint(save(tmp_path / "novae.safetensors", no_vae))
    with pytest.raises(CheckpointError, match="contains no tensors"):
        inspect_checkpoint(save(tmp_path / "empty.safetensors", {}))


# ---------------------------------------------------------------- pickles

class TouchOnUnpickle:
    """A pickle payload that creates ``marker`` when unpickled: stands in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def pickle_writer(protocol: int):
    def write(path: pathlib.Path, obj) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    return write


WRITERS = {
    "pickle-protocol-2": pickle_writer(2),
    "pickle-protocol-5": pickle_writer(5),
    "torch.save": lambda path, obj: torch.save(obj, path),
    "torch.save-legacy": lambda path, obj: torch.save(obj, path, _use_new_zipfile_serialization=False),
}


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_malicious_pickle_never_runs(tmp_path, writer):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists(), "the payload must be live for this test to mean anything"

    marker = tmp_path / "pwned"
    path = tmp_path / "model.ckpt"
    writer(path, {"state_dict": {"w": torch.zeros(2)}, "callback": TouchOnUnpickle(marker)})
    with pytest.raises(CheckpointError, match="refusing to unpickle .*--allow-pickle"):
        inspect_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"weights_only=True") as e:
        inspect_checkpoint(path, allow_pickle=True)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_legit_ckpt_loads_with_allow_pickle(tmp_path):
    path = tmp_path / "sd15-finetune-000002.ckpt"
    state = single_file("sd15")
    torch.save({"state_dict": state, "global_step": 1200, "epoch": 2}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_pickled(path, allow_pickle=False)
    loaded = load_pickled(path, allow_pickle=True)
    assert loaded.keys() == state.keys()
    info = inspect_checkpoint(path, allow_pickle=True)
    assert (info.kind, info.arch, info.epoch, info.addnet_hash) == ("full", "sd15", 2, None)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_garbage_pickle_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not a pickle")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_pickled(path, allow_pickle=True)


# ---------------------------------------------------------------- hashes

def test_hashes_match_hashlib(tmp_path):
    path = save(tmp_path / "mychar-000004.safetensors", kohya_sd15_lora(), kohya_metadata())
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    whole, after_header = hashlib.sha256(blob).hexdigest(), hashlib.sha256(blob[8 + length:]).hexdigest()
    assert sha256_file(path) == sha256_file(path, chunk=7) == whole
    assert addnet_hash(path) == after_header
    assert sha256_file_and_data(path, 8 + length, chunk=5) == (whole, after_header)
    info = inspect_checkpoint(path)
    assert (info.sha256, info.addnet_hash) == (whole, after_header)
    assert info.model_hash == whole[:10] and info.short_hash == after_header[:12]


def test_addnet_hash_ignores_metadata(tmp_path):
    a = save(tmp_path / "a.safetensors", kohya_sd15_lora(), kohya_metadata())
    b = save(tmp_path / "b.safetensors", kohya_sd15_lora(), kohya_metadata(ss_seed="7"))
    assert addnet_hash(a) == addnet_hash(b) and sha256_file(a) != sha256_file(b)


def test_sha256_folder(tmp_path):
    folder = make_diffusers_folder(tmp_path / "pipe", "StableDiffusionXLPipeline")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    expected = hashlib.sha256(b"".join(
        f"{rel}\0{hashlib.sha256((folder / rel).read_bytes()).hexdigest()}\n".encode() for rel in files
    )).hexdigest()
    assert sha256_folder(folder) == expected
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("ignored")
    (folder / "unet" / "__pycache__").mkdir()
    (folder / "unet" / "__pycache__" / "y.pyc").write_bytes(b"ignored")
    (folder / ".DS_Store").write_bytes(b"ignored")
    assert sha256_folder(folder) == expected
    (folder / "unet" / "config.json").write_text("{}")
    assert sha256_folder(folder) != expected


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("stem, expected", [
    ("mychar-000004", NameInfo("mychar", 4, None, False, "kohya")),
    ("mychar-step00001200", NameInfo("mychar", None, 1200, False, "kohya")),
    ("mychar", NameInfo("mychar", None, None, False, None)),
    ("my-char-v2-000010", NameInfo("my-char-v2", 10, None, False, "kohya")),
    ("epoch-000004", NameInfo("", 4, None, False, "kohya")),
    ("at-step00001000", NameInfo("", None, 1000, False, "kohya")),
    ("last", NameInfo("", None, None, False, "kohya")),
    ("mymodel2024-05-01_12-30-45-save-1200-4-0", NameInfo("mymodel", 4, 1200, False, "onetrainer")),
    ("2024-05-01_12-30-45-save-300-1-50", NameInfo("", 1, 300, False, "onetrainer")),
    ("mychar-ema-000004", NameInfo("mychar", 4, None, True, "kohya")),
    ("mychar_ema-000004", NameInfo("mychar", 4, None, True, "kohya")),
    ("mychar-000004-ema", NameInfo("mychar", 4, None, True, "kohya")),
    ("mychar.ema", NameInfo("mychar", None, None, True, None)),
    ("cinema-000004", NameInfo("cinema", 4, None, False, "kohya")),
    ("emanuel-000004", NameInfo("emanuel", 4, None, False, "kohya")),
])
def test_parse_checkpoint_name(stem, expected):
    assert parse_checkpoint_name(stem) == expected


def test_a_file_of_another_format_named_safetensors_is_refused_as_what_it_is(tmp_path):
    """torch.save's zip and pickle, a Git LFS pointer or an HTML error page saved as .safetensors: the one-line
    refusal names what the file is instead of a nonsensical header length."""
    import pickle
    import zipfile

    zipped = tmp_path / "zipped.safetensors"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": [1.0, 2.0]}))
    pickled = tmp_path / "pickled.safetensors"
    pickled.write_bytes(pickle.dumps({"state_dict": {"w": [1.0] * 100}}, protocol=2))
    pointer = tmp_path / "pointer.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123\n")
    page = tmp_path / "page.safetensors"
    page.write_text("<!DOCTYPE html><html><body>rate limited</body></html>")
    for path, what in ((zipped, "a zip archive"), (pickled, "a pickle"), (pointer, "a Git LFS pointer"),
                       (page, "an HTML or XML page")):
        with pytest.raises(CheckpointError) as e:
            read_header(path)
        assert reason(e).startswith(f"not a safetensors file but {what}"), reason(e)


def test_a_real_header_whose_length_starts_like_a_pickle_is_read(tmp_path):
    """A header of 640 bytes starts with 0x80 0x02, as a pickle does: still read as safetensors."""
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (640 - len(header))
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    assert path.read_bytes()[:2] == b"\x80\x02" and list(read_header(path).tensors) == ["w"]
