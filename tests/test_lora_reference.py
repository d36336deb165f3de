"""Our in-place LoRA patching against diffusers' own loader (load_lora_weights + fuse_lora)."""

import pytest
import torch

from evalsvc.checkpoints import load_tensors, read_header
from evalsvc.adapters.read import read_adapter_layers
from evalsvc.sampling.lora import WeightPatcher


def _components(pipe):
    return {name: getattr(pipe, name) for name in ("unet", "text_encoder", "text_encoder_2")
            if getattr(pipe, name, None) is not None}


def _write(kind, pipe, path):
    from evalsvc.toy.lora_files import random_lora_tensors, save_kohya_lora, save_peft_lora

    tensors = random_lora_tensors(pipe, rank=4, alpha=2.0 if kind != "peft" else None, seed=3, scale=0.2)
    if kind == "peft":
        return save_peft_lora(pipe, tensors, path)
    return save_kohya_lora(pipe, tensors, path, sgm_names=(kind == "sdxl-sgm"))


@pytest.mark.parametrize("kind", ["sd15-kohya", "sdxl-sgm", "sd15-peft"])
def test_patched_weights_equal_diffusers_fused_weights(tmp_path, kind):
    from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline

    build = build_sdxl_pipeline if kind.startswith("sdxl") else build_sd15_pipeline
    ours, reference = build(seed=0), build(seed=0)
    path = _write(kind.split("-")[1] if kind != "sdxl-sgm" else kind, ours, tmp_path / "lora-000001.safetensors")
    pristine = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in _components(ours).items()}

    layers = read_adapter_layers(path, load_tensors(path), read_header(path).metadata, ours)
    patcher = WeightPatcher(ours)
    patcher.apply(path, layers, 0.7)

    reference.load_lora_weights(str(path))
    reference.fuse_lora(lora_scale=0.7)
    reference.unload_lora_weights()

    changed = 0
    for component, model in _components(ours).items():
        ref_state = _components(reference)[component].state_dict()
        for key, value in model.state_dict().items():
            assert torch.allclose(value, ref_state[key], atol=1e-6, rtol=1e-5), f"{component}.{key}"
            changed += not torch.equal(value, pristine[component][key])
    assert changed >= len(layers) * 0.9  # the LoRA did change weights

    patcher.restore()
    for component, model in _components(ours).items():
        for key, value in model.state_dict().items():
            assert torch.equal(value, pristine[component][key]), f"{component}.{key} not restored exactly"


def test_a_stack_of_two_loras_equals_diffusers_with_both_adapters_fused(tmp_path):
    """`--with-lora`: the candidate at 0.7 and a companion at 0.4 on the same modules, as diffusers' multi-adapter
    loader (set_adapters + fuse_lora) merges them."""
    from evalsvc.toy.lora_files import random_lora_tensors, save_kohya_lora
    from evalsvc.toy.tiny import build_sd15_pipeline

    ours, reference = build_sd15_pipeline(seed=0), build_sd15_pipeline(seed=0)
    paths = []
    for i, seed in enumerate((3, 4)):
        tensors = random_lora_tensors(ours, rank=4, alpha=2.0, seed=seed, scale=0.2)
        paths.append(save_kohya_lora(ours, tensors, tmp_path / f"lora{i}-000001.safetensors"))
    pristine = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in _components(ours).items()}
    parts = [(p, read_adapter_layers(p, load_tensors(p), read_header(p).metadata, ours), s) for p, s in zip(paths, (0.7, 0.4))]
    patcher = WeightPatcher(ours)
    patcher.apply_many(parts)

    for name, path in zip(("a", "b"), paths):
        reference.load_lora_weights(str(path), adapter_name=name)
    reference.set_adapters(["a", "b"], [0.7, 0.4])
    reference.fuse_lora(adapter_names=["a", "b"])
    reference.unload_lora_weights()

    for component, model in _components(ours).items():
        ref_state = _components(reference)[component].state_dict()
        for key, value in model.state_dict().items():
            assert torch.allclose(value, ref_state[key], atol=1e-6, rtol=1e-5), f"{component}.{key}"
    patcher.apply(*parts[0])  # back to one LoRA: the companion's modules are pristine again
    single = WeightPatcher(build_sd15_pipeline(seed=0))
    single.apply(*parts[0][:1], read_adapter_layers(paths[0], load_tensors(paths[0]), read_header(paths[0]).metadata,
                                                 single.pipe), 0.7)
    for component, model in _components(ours).items():
        other = _components(single.pipe)[component].state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, other[key]), f"{component}.{key}"
    patcher.restore()
    for component, model in _components(ours).items():
        for key, value in model.state_dict().items():
            assert torch.equal(value, pristine[component][key]), f"{component}.{key} not restored exactly"
