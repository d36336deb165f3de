"""Every LyCORIS algorithm, written by the LyCORIS package itself (kohya wrapper, as sd-scripts trains it) and merged
by LyCORIS's own modules: our registration, deltas and sampled pixels against that reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalsvc.adapters.read import read_adapter_layers
from evalsvc.checkpoints import inspect_checkpoint, load_tensors, read_header
from evalsvc.sampling.engine import CellSpec, PromptCache, sample_cells
from evalsvc.sampling.lora import WeightPatcher

# LyCORIS 4.1's built-in "full" preset also targets every TimestepEmbedding (for Anima), which collides with its
# own time_embedding names on SD UNets; this is the SD preset of LyCORIS 3 and kohya's defaults.
SD_PRESET = """
enable_conv = true
unet_target_module = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"]
unet_target_name = ["conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2"]
text_encoder_target_module = ["CLIPAttention", "CLIPMLP"]
text_encoder_target_name = []
"""
# On SDXL, attention blocks only: the SGM renaming below covers their names (a file mixing SGM and diffusers block
# names is one diffusers' own loader drops the SGM half of).
SDXL_PRESET = """
enable_conv = false
unet_target_module = ["Transformer2DModel"]
unet_target_name = []
text_encoder_target_module = ["CLIPAttention", "CLIPMLP"]
text_encoder_target_name = []
"""

# name: (create_network keyword arguments, scale of the random trained tensors)
VARIANTS = {
    "locon": (dict(algo="locon", conv_dim=4, conv_alpha=2), 0.15),
    "locon-tucker": (dict(algo="locon", conv_dim=4, conv_alpha=2, use_tucker=True), 0.15),
    "rslora-lycoris": (dict(algo="locon", rs_lora=True), 0.15),
    "loha": (dict(algo="loha", conv_dim=4, conv_alpha=2), 0.3),
    "loha-tucker": (dict(algo="loha", conv_dim=4, conv_alpha=2, use_tucker=True), 0.3),
    "lokr-full": (dict(algo="lokr", full_matrix=True), 0.1),
    "lokr-factored": (dict(algo="lokr", network_dim=2, network_alpha=1, factor=4, decompose_both=True), 0.2),
    "lokr-tucker": (dict(algo="lokr", network_dim=2, conv_dim=2, conv_alpha=1, factor=4, use_tucker=True), 0.2),
    "dora-out": (dict(algo="locon", dora_wd=True), 0.15),
    "dora-in": (dict(algo="locon", dora_wd=True, wd_on_out=False), 0.15),
    "doha": (dict(algo="loha", dora_wd=True), 0.3),
    "glora": (dict(algo="glora"), 0.15),
    "oft": (dict(algo="diag-oft"), 0.1),
    "oft-constrained-rescaled": (dict(algo="diag-oft", constraint=1e-3, rescaled=True), 0.1),
    "boft": (dict(algo="boft"), 0.1),
    "ia3": (dict(algo="ia3"), 0.3),
}
STRENGTHS = (1.0, 0.6)
CELLS = [CellSpec("a red circle", "", 5, 7.0, 6, "euler", 64, 64), CellSpec("a blue square", "", 6, 4.0, 6, "euler", 64, 64)]


def _weighted(model) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules() if hasattr(module, "weight")}


def _write_lycoris(tmp_path, variant: str, arch: str = "sd15", wrapper: str = "kohya"):
    """The file LyCORIS saves, with seeded random trained tensors, LyCORIS's own merged weights per (component,
    module) and the trained pipeline (LyCORIS's modules hooked in).

    `wrapper` "kohya" is LyCORIS's sd-scripts network (`lora_unet_`, `lora_te_` names); on SDXL its attention blocks
    get SGM names (`input_blocks_4_1`) as sd-scripts' own SDXL UNet names them. "lycoris" is its generic wrapper
    (`lycoris_` names, UNet only), as SimpleTuner trains LoKr.
    """
    import lycoris
    import lycoris.kohya

    from evalsvc.toy.single_file import unet_block_map
    from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline

    kwargs, scale = VARIANTS[variant]
    kwargs = dict(kwargs)
    dim, alpha = kwargs.pop("network_dim", 4), kwargs.pop("network_alpha", 2)
    pipe = (build_sdxl_pipeline if arch == "sdxl" else build_sd15_pipeline)(seed=0)
    encoders = [pipe.text_encoder, pipe.text_encoder_2] if arch == "sdxl" else [pipe.text_encoder]
    if wrapper == "kohya":
        preset = tmp_path / "sd.toml"
        preset.write_text(SDXL_PRESET if arch == "sdxl" else SD_PRESET)
        # sd-scripts passes SDXL's two text encoders as a list (lora_te1_, lora_te2_) and SD1's one alone (lora_te_)
        text_encoder = encoders if arch == "sdxl" else pipe.text_encoder
        network = lycoris.kohya.create_network(1.0, dim, alpha, pipe.vae, text_encoder, pipe.unet,
                                               preset=str(preset), **kwargs)
        network.apply_to(text_encoder, pipe.unet, True, True)
        owned = [("unet", network.unet_loras)] + [
            (("text_encoder", "text_encoder_2")[i], [m for m in network.text_encoder_loras
                                                    if m.lora_name.startswith(("lora_te_", "lora_te1_", "lora_te2_")[
                                                        i + (arch == "sdxl")])])
            for i in range(len(encoders))]
    else:
        lycoris.LycorisNetwork.apply_preset({"target_module": ["Transformer2DModel", "ResnetBlock2D"],
                                             "target_name": []})
        algo = kwargs.pop("algo")
        network = lycoris.create_lycoris(pipe.unet, 1.0, linear_dim=dim, linear_alpha=alpha, algo=algo, **kwargs)
        network.apply_to()
        owned = [("unet", network.loras)]
    generator = torch.Generator().manual_seed(sum(map(ord, variant)))
    with torch.no_grad():
        for name, param in network.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * scale
            param.copy_(param * (1 + noise) if "dora_scale" in name or "rescale" in name else noise)
    path = tmp_path / f"{variant}-000003.safetensors"
    network.save_weights(str(path), torch.float32, {"ss_network_module": "lycoris.kohya", "ss_epoch": "3",
                                                    "ss_base_model_version": "sdxl_base_v1-0" if arch == "sdxl"
                                                    else "sd_v1"})
    if wrapper == "kohya" and arch == "sdxl":
        _rename_attention_blocks_as_sgm(path, unet_block_map(pipe.unet.config))
    merged = {}
    with torch.no_grad():
        for component, modules in owned:
            names = _weighted(getattr(pipe, component))
            for module in modules:
                key = (component, names[id(module.org_module[0])])
                merged[key] = _lycoris_merged(module).detach().float().clone()
    return path, merged, pipe


def _rename_attention_blocks_as_sgm(path, block_map):
    """sd-scripts' SDXL UNet names attention blocks as the SGM code does (`down_blocks.1.attentions.0` is
    `input_blocks.4.1`); diffusers' SDXL loader maps those names back."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    metadata = read_header(path).metadata
    renames = [("lora_unet_" + d.replace(".", "_"), "lora_unet_" + g.replace(".", "_"))
               for d, g, is_resnet in block_map if not is_resnet]
    renamed = {}
    for key, value in tensors.items():
        stem, _, name = key.partition(".")
        stem += "_"
        for old, new in renames:
            if stem.startswith(old):
                stem = new + stem[len(old):]
                break
        renamed[f"{stem[:-1]}.{name}"] = value
    assert renamed.keys() != tensors.keys()
    save_file(renamed, path, metadata)


def _lycoris_merged(module) -> torch.Tensor:
    """The weight LyCORIS's forward computes with. Its LoHa and LoKr `get_merged_weight` (4.1.3) multiply by
    alpha/rank twice and fail on 3x3 convs, while their training forward applies `get_weight` once, as A1111 and
    ComfyUI do: for those the reference is the forward's weight."""
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    if isinstance(module, (LohaModule, LokrModule)):
        weight = module.org_weight + module.get_weight(module.shape)
        return module.apply_weight_decompose(weight) if module.wd else weight
    return module.get_merged_weight(multiplier=1.0)[0]


def _reference_pipeline(merged, strength: float, arch: str = "sd15"):
    """A fresh base with LyCORIS's merged weights, at `strength` as A1111 and ComfyUI apply it:
    W + strength * (merged - W)."""
    from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline

    pipe = (build_sdxl_pipeline if arch == "sdxl" else build_sd15_pipeline)(seed=0)
    with torch.no_grad():
        for (component, module), weight in merged.items():
            target = getattr(pipe, component).get_submodule(module).weight
            target.copy_((target + strength * (weight.reshape(target.shape) - target)).to(target.dtype))
    return pipe


def _nudged(merged, arch: str):
    """The reference with a 1e-7 change to every weight the adapter touches: a well-conditioned fixture moves no
    pixel by more than 1/255 for it, so the 1/255 parity tests the algorithm, not the rounding."""
    pipe = _reference_pipeline(merged, 1.0, arch)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for component, module in merged:
            weight = getattr(pipe, component).get_submodule(module).weight
            weight.add_(1e-7 * torch.randn(weight.shape, generator=generator).sign())
    return pipe


def _pixels(pipe, te_state: str) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=int) for image in sample_cells(pipe, CELLS, PromptCache(), te_state)])


CASES = [(variant, "sd15", "kohya") for variant in sorted(VARIANTS)] + [
    ("loha", "sdxl", "kohya"), ("dora-out", "sdxl", "kohya"), ("lokr-factored", "sdxl", "lycoris")]


@pytest.mark.parametrize("variant, arch, wrapper", CASES)
def test_lycoris_file_registers_and_samples_as_lycoris_merges_it(tmp_path, variant, arch, wrapper):
    from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline

    path, merged, trained = _write_lycoris(tmp_path, variant, arch, wrapper)
    info = inspect_checkpoint(path)
    assert (info.kind, info.arch, info.lora_format, info.epoch) == ("lora", arch, "kohya", 3)

    ours = (build_sdxl_pipeline if arch == "sdxl" else build_sd15_pipeline)(seed=0)
    base_pixels = _pixels(ours, "base")
    layers = read_adapter_layers(path, load_tensors(path), read_header(path).metadata, ours)
    assert {(layer.component, layer.module) for layer in layers} == set(merged)
    for layer in layers:  # the delta itself, module by module
        weight = getattr(ours, layer.component).get_submodule(layer.module).weight.detach().float()
        expected = merged[(layer.component, layer.module)].reshape(weight.shape) - weight
        assert torch.allclose(layer.delta(weight), expected, atol=1e-5, rtol=1e-4), (layer.component, layer.module)

    patcher = WeightPatcher(ours)
    pristine = {k: v.clone() for k, v in ours.unet.state_dict().items()}
    for strength in STRENGTHS:
        patcher.apply(path, layers, strength)
        pixels = _pixels(ours, f"lora:{strength}")
        reference = _pixels(_reference_pipeline(merged, strength, arch), "base")
        assert np.abs(pixels - reference).max() <= 1, f"strength {strength}"
        assert np.abs(pixels - base_pixels).max() >= 8, "the adapter should visibly change the image"
        if strength == 1.0:  # also the trained network's own forward, LyCORIS's modules hooked into the base
            assert np.abs(pixels - _pixels(trained, "base")).max() <= 1, "LyCORIS's forward"
            assert np.abs(_pixels(_nudged(merged, arch), "base") - reference).max() <= 1, "not well-conditioned"
    patcher.restore()
    assert all(torch.equal(v, pristine[k]) for k, v in ours.unet.state_dict().items())


def test_add_and_sample_lycoris_files_through_the_cli(tmp_path, sd15_dir):
    """`evalsvc add` registers LyCORIS files beside the base and `evalsvc sample` writes their images as LyCORIS's
    merged weights sample them, at the strength asked for."""
    from PIL import Image

    from evalsvc.cli import main
    from evalsvc.store import open_store

    files = {}
    for variant in ("lokr-factored", "boft"):
        (tmp_path / variant).mkdir()
        path, merged, _ = _write_lycoris(tmp_path / variant, variant)
        files[path] = merged
    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\n[[prompts]]\nid = "circle"\ntext = "a red circle"\n')
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir),
                 *map(str, files)]) == 0
    assert main(["sample", "--store", str(store), "--run", "r", "--suite", str(suite), "--seeds", "5", "--cfg", "7",
                 "--steps", "6", "--sampler", "euler", "--size", "64x64", "--lora-scale", "0.8", "--no-progress"]) == 0
    with open_store(store) as s:
        rows = s.db.execute("SELECT c.file_name, s.image_path FROM samples s JOIN work w ON w.key = s.key "
                            "JOIN checkpoints c ON c.sha256 = w.checkpoint").fetchall()
        root = s.layout.images
    sampled = {name: np.asarray(Image.open(root / image).convert("RGB"), dtype=int) for name, image in rows}
    assert {path.name for path in files} <= set(sampled)
    cell = CellSpec("a red circle", "", 5, 7.0, 6, "euler", 64, 64)
    for path, merged in files.items():
        name = path.name
        reference = np.asarray(sample_cells(_reference_pipeline(merged, 0.8), [cell], PromptCache(), "base")[0], dtype=int)
        assert np.abs(sampled[name] - reference).max() <= 1, name
