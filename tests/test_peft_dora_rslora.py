"""PEFT DoRA and rsLoRA files, written by diffusers' own `save_lora_weights` from PEFT-adapted models, against
diffusers' own `load_lora_weights` (the pipeline with PEFT's layers active)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalsvc.adapters.dora import DoraLayer
from evalsvc.adapters.read import read_adapter_layers
from evalsvc.checkpoints import inspect_checkpoint, load_tensors, read_header
from evalsvc.sampling.engine import CellSpec, PromptCache, sample_cells
from evalsvc.sampling.lora import WeightPatcher

CELLS = [CellSpec("a red circle", "", 5, 7.0, 6, "euler", 64, 64), CellSpec("a blue square", "", 6, 4.0, 6, "euler", 64, 64)]
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "conv2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def _write_peft(tmp_path, *, use_dora: bool, use_rslora: bool, components=("unet", "text_encoder")):
    """Adapters added to a tiny SD1.5 UNet and text encoder by PEFT, given seeded random weights (DoRA magnitudes
    moved off their initial norms), saved by `StableDiffusionPipeline.save_lora_weights` with adapter metadata;
    and the adapted pipeline itself, PEFT's layers active: the model as trained."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from evalsvc.toy.tiny import build_sd15_pipeline

    pipe = build_sd15_pipeline(seed=0)
    configs = {}
    for component, targets in (("unet", UNET_TARGETS), ("text_encoder", TEXT_TARGETS)):
        if component not in components:
            continue
        config = LoraConfig(r=4, lora_alpha=2, target_modules=targets, use_dora=use_dora, use_rslora=use_rslora,
                            init_lora_weights=False)
        model = getattr(pipe, component)
        inject_adapter_in_model(config, model)
        generator = torch.Generator().manual_seed(len(component))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_magnitude_vector" in name:
                    param.mul_(1 + 0.2 * torch.randn(param.shape, generator=generator))
                elif "lora_" in name:
                    param.copy_(0.2 * torch.randn(param.shape, generator=generator))
        configs[component] = config
    folder = tmp_path / "checkpoint-40"
    layers = {f"{c}_lora_layers": get_peft_model_state_dict(getattr(pipe, c)) for c in configs}
    metadata = {f"{c}_lora_adapter_metadata": config.to_dict() for c, config in configs.items()}
    StableDiffusionPipeline.save_lora_weights(folder, **layers, **metadata, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors", pipe


def _pixels(pipe, te_state: str) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=int) for image in sample_cells(pipe, CELLS, PromptCache(), te_state)])


def _ours(path) -> np.ndarray:
    from evalsvc.toy.tiny import build_sd15_pipeline

    ours = build_sd15_pipeline(seed=0)
    layers = read_adapter_layers(path, load_tensors(path), read_header(path).metadata, ours)
    WeightPatcher(ours).apply(path, layers, 1.0)
    return layers, _pixels(ours, "lora")


@pytest.mark.parametrize("kind", ["dora", "rslora", "dora+rslora"])
def test_peft_file_samples_as_the_peft_model_that_wrote_it(tmp_path, kind):
    path, trained = _write_peft(tmp_path, use_dora="dora" in kind, use_rslora="rslora" in kind)
    assert any("lora_magnitude_vector" in key for key in load_tensors(path)) == ("dora" in kind)
    info = inspect_checkpoint(path)
    assert (info.kind, info.arch, info.lora_format) == ("lora", "sd15", "peft")
    layers, pixels = _ours(path)
    assert {layer.component for layer in layers} == {"unet", "text_encoder"}
    assert all(isinstance(layer, DoraLayer) for layer in layers) == ("dora" in kind)
    assert np.abs(pixels - _pixels(trained, "trained")).max() <= 1


@pytest.mark.parametrize("kind", ["dora", "rslora", "dora+rslora"])
def test_peft_file_samples_as_diffusers_load_lora_weights_does(tmp_path, kind):
    """UNet adapters only for DoRA: diffusers 0.42 with transformers 5 leaves a text encoder's DoRA magnitudes at
    their initial values (its keys end `.lora_magnitude_vector.default_0` where PEFT now wants `….weight`)."""
    from evalsvc.toy.tiny import build_sd15_pipeline

    components = ("unet",) if "dora" in kind else ("unet", "text_encoder")
    path, _ = _write_peft(tmp_path, use_dora="dora" in kind, use_rslora="rslora" in kind, components=components)
    reference = build_sd15_pipeline(seed=0)
    base = _pixels(reference, "base")
    reference.load_lora_weights(str(path))
    expected = _pixels(reference, "diffusers")
    _, pixels = _ours(path)
    assert np.abs(pixels - expected).max() <= 1
    assert np.abs(expected - base).max() >= 8, "the adapter should visibly change the image"


def test_rslora_scale_is_alpha_over_the_root_of_the_rank(tmp_path):
    """Read from the metadata diffusers writes: alpha 2, rank 4 gives 1.0, not a plain LoRA's 0.5."""
    from evalsvc.toy.tiny import build_sd15_pipeline

    path, _ = _write_peft(tmp_path, use_dora=False, use_rslora=True)
    layers = read_adapter_layers(path, load_tensors(path), read_header(path).metadata, build_sd15_pipeline(seed=0))
    assert {layer.scale for layer in layers} == {1.0}
