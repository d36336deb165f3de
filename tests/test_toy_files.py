"""The toy file writers against diffusers' own readers: `from_single_file` and `load_lora_weights`."""

from __future__ import annotations

import hashlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from evalsvc.toy import lora_files, single_file  # noqa: E402
from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline  # noqa: E402

BUILDERS = {"sd15": build_sd15_pipeline, "sdxl": build_sdxl_pipeline}


def _pipeline_class(arch):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny pipeline, its diffusers folder and its single-file checkpoint."""
    root = tmp_path_factory.mktemp("toy-files")
    out = {}
    for arch, build in BUILDERS.items():
        pipe = build(0)
        pipe.save_pretrained(root / arch)
        out[arch] = (pipe, root / arch, single_file.save_single_file(pipe, root / f"{arch}.safetensors"))
    return out


def _assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module):
    a, b = expected.state_dict(), actual.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert b[key].device.type != "meta", f"{key} was not loaded"
        assert torch.equal(a[key], b[key]), key


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# --- single-file checkpoints -------------------------------------------------------------------


def test_sd15_single_file_roundtrip(saved):
    pipe, folder, path = saved["sd15"]
    loaded = _pipeline_class("sd15").from_single_file(str(path), config=str(folder), local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(pipe, component), getattr(loaded, component))


def test_sdxl_single_file_roundtrip(saved):
    """UNet, VAE and CLIP-L load through from_single_file; OpenCLIP-G through diffusers' own converter.

    diffusers picks the loader for `text_encoder_2` by comparing hidden widths with embedders.0; the tiny
    encoders share one width, so from_single_file would fill text_encoder_2 with text_encoder's weights.
    The test below checks the full from_single_file path with distinct widths, as in real SDXL.
    """
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    pipe, folder, path = saved["sdxl"]
    loaded = _pipeline_class("sdxl").from_single_file(str(path), config=str(folder), local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(pipe, component), getattr(loaded, component))
    checkpoint, _ = _read(path)
    converted = convert_open_clip_checkpoint(pipe.text_encoder_2, checkpoint, prefix=single_file.SDXL_OPEN_CLIP_PREFIX)
    reference = pipe.text_encoder_2.state_dict()
    assert set(converted) == set(reference)
    assert all(torch.equal(converted[k], reference[k]) for k in reference)


def test_sdxl_single_file_roundtrip_distinct_text_widths(tmp_path):
    """All four SDXL models through from_single_file when the text encoders differ in width (loading only)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    pipe = build_sdxl_pipeline(0)
    config = pipe.text_encoder_2.config.to_dict() | {"hidden_size": 48, "intermediate_size": 96}
    torch.manual_seed(1)
    pipe.text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config))
    pipe.save_pretrained(tmp_path / "wide")
    path = single_file.save_single_file(pipe, tmp_path / "wide.safetensors")
    loaded = _pipeline_class("sdxl").from_single_file(str(path), config=str(tmp_path / "wide"), local_files_only=True)
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(getattr(pipe, component), getattr(loaded, component))


def test_single_file_uses_ldm_keys(saved):
    sd15, meta = _read(saved["sd15"][2])
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert {k.split(".")[0] for k in sd15} == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight" in sd15
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in sd15  # down_blocks.0.downsamplers.0.conv
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in sd15  # UpBlock2D upsampler
    assert "model.diffusion_model.middle_block.2.in_layers.2.weight" in sd15
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in sd15

    sdxl, meta = _read(saved["sdxl"][2])
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    te2 = saved["sdxl"][0].text_encoder_2
    width = te2.config.hidden_size
    assert sdxl["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * width, width)
    assert torch.equal(sdxl["conditioner.embedders.1.model.text_projection"], te2.text_projection.weight.T)
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sdxl  # CrossAttnUpBlock2D upsampler
    assert "model.diffusion_model.label_emb.0.0.weight" in sdxl
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in sdxl


def test_single_file_rejects_non_string_metadata(saved, tmp_path):
    with pytest.raises(TypeError, match="strings"):
        single_file.save_single_file(saved["sd15"][0], tmp_path / "x.safetensors", metadata={"epoch": 3})


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
@pytest.mark.parametrize("layout", ["diffusers", "ldm"])
def test_unet_only_reloads(saved, tmp_path, arch, layout):
    from diffusers import UNet2DConditionModel

    pipe, folder, _ = saved[arch]
    path = single_file.save_unet_only(pipe, tmp_path / "unet.safetensors", layout=layout)
    tensors, _ = _read(path)
    assert all(k.startswith(single_file.UNET_PREFIX) == (layout == "ldm") for k in tensors)
    loaded = UNet2DConditionModel.from_single_file(str(path), config=str(folder), subfolder="unet", local_files_only=True)
    _assert_same_weights(pipe.unet, loaded)
    if layout == "diffusers":
        fresh = UNet2DConditionModel.from_config(pipe.unet.config)
        fresh.load_state_dict(tensors, strict=True)
        _assert_same_weights(pipe.unet, fresh)


def test_unet_only_rejects_unknown_layout(saved, tmp_path):
    with pytest.raises(ValueError, match="layout"):
        single_file.save_unet_only(saved["sd15"][0], tmp_path / "u.safetensors", layout="sgm")


# --- LoRA tensors and kohya names ----------------------------------------------------------------


def test_lora_targets_and_shapes(saved):
    pipe = saved["sd15"][0]
    targets = lora_files.lora_targets(pipe)
    assert set(targets) == {"unet", "text_encoder"}
    assert set(lora_files.lora_targets(saved["sdxl"][0])) == {"unet", "text_encoder", "text_encoder_2"}
    n_attention = 6  # 2 down, 1 mid and 3 up transformer blocks
    assert len(targets["unet"]) == 12 * n_attention
    assert len(targets["text_encoder"]) == 6 * pipe.text_encoder.config.num_hidden_layers
    assert "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj" in targets["unet"]
    tensors = lora_files.random_lora_tensors(pipe, rank=3)
    down, up, alpha = tensors["unet"]["down_blocks.0.attentions.0.proj_in"]
    conv = pipe.unet.get_submodule("down_blocks.0.attentions.0.proj_in")
    assert down.shape == (3, conv.in_channels, 1, 1) and up.shape == (conv.out_channels, 3, 1, 1) and alpha == 1.0
    down, up, _ = tensors["text_encoder"][targets["text_encoder"][-1]]  # an fc2
    assert down.shape == (3, pipe.text_encoder.config.intermediate_size)


def test_random_lora_tensors_are_deterministic(saved):
    pipe = saved["sd15"][0]
    a = lora_files.random_lora_tensors(pipe, seed=5)
    b = lora_files.random_lora_tensors(pipe, seed=5)
    c = lora_files.random_lora_tensors(pipe, seed=6)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert all(torch.equal(x, y) for x, y in zip(a["unet"][name][:2], b["unet"][name][:2]))
    assert not torch.equal(a["unet"][name][1], c["unet"][name][1])
    zero = lora_files.random_lora_tensors(pipe, zero_up=True, include_text_encoder=False)
    assert set(zero) == {"unet"}
    assert all(not up.any() and down.any() for down, up, _ in zero["unet"].values())


def test_kohya_sd15_keys(saved, tmp_path):
    pipe = saved["sd15"][0]
    path = lora_files.save_kohya_lora(pipe, lora_files.random_lora_tensors(pipe, alpha=2), tmp_path / "a.safetensors")
    tensors, _ = _read(path)
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha"} <= set(tensors)
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert tensors[f"{te}.alpha"].ndim == 0 and tensors[f"{te}.alpha"].item() == 2.0
    assert all(k.startswith(("lora_unet_down_blocks_", "lora_unet_mid_block_", "lora_unet_up_blocks_", "lora_te_"))
               for k in tensors)


def test_kohya_sdxl_sgm_names_match_diffusers_mapping(saved, tmp_path):
    """diffusers' SGM remapping (what SDXL `load_lora_weights` runs) sends our SGM keys where our plain keys go."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    pipe = saved["sdxl"][0]
    tensors = lora_files.random_lora_tensors(pipe)
    sgm, _ = _read(lora_files.save_kohya_lora(pipe, tensors, tmp_path / "sgm.safetensors"))
    plain, _ = _read(lora_files.save_kohya_lora(pipe, tensors, tmp_path / "plain.safetensors", sgm_names=False))
    for key in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha",
                "lora_unet_input_blocks_5_1_proj_in.lora_down.weight",
                "lora_unet_middle_block_1_transformer_blocks_0_ff_net_2.lora_up.weight",
                "lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_out_0.lora_down.weight",
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                "lora_te2_text_model_encoder_layers_2_self_attn_out_proj.alpha"):
        assert key in sgm
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block_" in k for k in sgm)
    mapped, mapped_alphas = _convert_non_diffusers_lora_to_diffusers(
        _maybe_map_sgm_blocks_to_diffusers(dict(sgm), pipe.unet.config))
    direct, direct_alphas = _convert_non_diffusers_lora_to_diffusers(dict(plain))
    assert set(mapped) == set(direct) and mapped_alphas == direct_alphas
    assert all(torch.equal(mapped[k], direct[k]) for k in direct)


def test_kohya_metadata(saved, tmp_path):
    pipe = saved["sdxl"][0]
    path = lora_files.save_kohya_lora(pipe, lora_files.random_lora_tensors(pipe, rank=8, alpha=4),
                                      tmp_path / "xlchar-000007.safetensors", metadata={"ss_epoch": "7", "mine": "x"})
    _, meta = _read(path)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_epoch"] == "7" and meta["mine"] == "x"
    assert meta["ss_output_name"] == "xlchar"
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "4.0")
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert json.loads(meta["ss_tag_frequency"])["10_xlchar"]["xlchar"] == 10
    for key in ("ss_session_id", "ss_steps", "ss_learning_rate", "ss_clip_skip", "ss_datasets"):
        assert key in meta
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    sd15 = saved["sd15"][0]
    tensors = lora_files.random_lora_tensors(sd15, include_text_encoder=False)
    _, sd15_meta = _read(lora_files.save_kohya_lora(sd15, tensors, tmp_path / "unet-only.safetensors"))
    assert sd15_meta["ss_base_model_version"] == "sd_v1"
    assert sd15_meta["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_write_kohya_epochs(saved, tmp_path):
    paths = lora_files.write_kohya_epochs(saved["sd15"][0], tmp_path, name="mychar", epochs=3, alpha=2.0)
    assert [p.name for p in paths] == [f"mychar-00000{i}.safetensors" for i in (1, 2, 3)]
    loaded = [_read(p) for p in paths]
    assert [m["ss_epoch"] for _, m in loaded] == ["1", "2", "3"]
    assert [m["ss_steps"] for _, m in loaded] == ["10", "20", "30"]
    assert len({m["ss_session_id"] for _, m in loaded}) == 1
    assert {m["ss_output_name"] for _, m in loaded} == {"mychar"}
    assert len({m["sshs_model_hash"] for _, m in loaded}) == 3
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"
    assert not torch.equal(loaded[0][0][key], loaded[1][0][key])
    again = lora_files.write_kohya_epochs(saved["sd15"][0], tmp_path / "again", name="mychar", epochs=3, alpha=2.0)
    for (tensors, meta), path in zip(loaded, again):  # same content (header key order is not fixed)
        tensors_again, meta_again = _read(path)
        assert meta_again == meta and all(torch.equal(tensors[k], tensors_again[k]) for k in tensors)


# --- LoRA files through diffusers' load_lora_weights -------------------------------------------


def _load_and_fuse(arch, tensors, write, tmp_path):
    """A fresh pipeline with the file written by `write` loaded and fused; returns (pipe, original weights)."""
    pipe = BUILDERS[arch](0)
    original = {c: {n: getattr(pipe, c).get_submodule(n).weight.detach().clone() for n in mods}
                for c, mods in tensors.items()}
    path = write(pipe, tensors, tmp_path / "lora.safetensors")
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(components=list(tensors))
    return pipe, original


def _fused_weight(pipe, component, name):
    module = getattr(pipe, component).get_submodule(name)
    return getattr(module, "base_layer", module).weight


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_loaded_lora_changes_exactly_the_written_modules(saved, tmp_path, arch, fmt):
    write = {"kohya": lora_files.save_kohya_lora, "peft": lora_files.save_peft_lora}[fmt]
    tensors = lora_files.random_lora_tensors(saved[arch][0], rank=4, alpha=2.0, seed=3)
    pipe, original = _load_and_fuse(arch, tensors, write, tmp_path)
    for component, modules in tensors.items():
        assert getattr(pipe, component).peft_config, f"no adapter loaded into {component}"
        for name, (down, up, alpha) in modules.items():
            delta = _fused_weight(pipe, component, name) - original[component][name]
            expected = (alpha / down.shape[0]) * (up.flatten(1) @ down.flatten(1))
            torch.testing.assert_close(delta.flatten(1), expected, atol=1e-5, rtol=0, msg=f"{component}.{name}")
            assert expected.abs().max() > 1e-4  # the check above is not vacuous


def test_peft_file_keys_match_diffusers_layout(saved, tmp_path):
    pipe = saved["sdxl"][0]
    tensors = lora_files.random_lora_tensors(pipe, rank=4, alpha=8)
    weights, meta = _read(lora_files.save_peft_lora(pipe, tensors, tmp_path / "p.safetensors"))
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in weights
    assert "text_encoder_2.text_model.encoder.layers.0.mlp.fc2.lora_B.weight" in weights
    config = json.loads(meta["lora_adapter_metadata"])
    assert (config["unet.r"], config["unet.lora_alpha"], config["text_encoder.lora_alpha"]) == (4, 8.0, 8.0)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_zero_up_lora_changes_nothing(saved, tmp_path, arch):
    tensors = lora_files.random_lora_tensors(saved[arch][0], zero_up=True, seed=4)
    pipe, original = _load_and_fuse(arch, tensors, lora_files.save_kohya_lora, tmp_path)
    for component, modules in tensors.items():
        for name in modules:
            assert torch.equal(_fused_weight(pipe, component, name), original[component][name])
