"""kohya-style adapter files (`lora_unet_…`, `lora_te…`, `lycoris_…`), as kohya sd-scripts, LyCORIS, OneTrainer and
SimpleTuner write them:
module names flattened with `_`, one algorithm per module told by its tensor names."""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from . import glora, ia3, loha, lokr, lora, oft
from .dora import lycoris_dora
from .layer import AdapterLayer

COMPONENT_PREFIXES = {
    "lora_unet_": "unet",
    "lycoris_": "unet",  # LyCORIS's generic wrapper on a UNet (SimpleTuner)
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te_": "text_encoder",
}
# The tensors of each algorithm (KEYS; REQUIRED: one of each set), beside `alpha` and `dora_scale`.
ALGORITHMS = {"LoRA": lora, "LoHa": loha, "LoKr": lokr, "GLoRA": glora, "OFT": oft, "IA3": ia3}
SHARED_KEYS = frozenset({"alpha", "dora_scale"})
KNOWN_KEYS = SHARED_KEYS.union(*(module.KEYS for module in ALGORITHMS.values()))
DORA_ALGORITHMS = ("LoRA", "LoHa", "LoKr")

# SGM (original SDXL code) names left after diffusers renumbers the blocks, as diffusers'
# `_convert_unet_lora_key` renames them; resnet internals for LoCon-style conv LoRAs.
_SGM_RENAMES = (
    ("lora_unet_input_blocks_0_0", "lora_unet_conv_in"),
    ("lora_unet_out_2", "lora_unet_conv_out"),
    ("lora_unet_time_embed_0", "lora_unet_time_embedding_linear_1"),
    ("lora_unet_time_embed_2", "lora_unet_time_embedding_linear_2"),
    ("lora_unet_label_emb_0_0", "lora_unet_add_embedding_linear_1"),
    ("lora_unet_label_emb_0_2", "lora_unet_add_embedding_linear_2"),
    ("lora_unet_input_blocks_", "lora_unet_down_blocks_"),
    ("lora_unet_middle_block_", "lora_unet_mid_block_"),
    ("lora_unet_output_blocks_", "lora_unet_up_blocks_"),
    ("_in_layers_2", "_conv1"),
    ("_emb_layers_1", "_time_emb_proj"),
    ("_out_layers_3", "_conv2"),
    ("_skip_connection", "_conv_shortcut"),
    ("_op", "_conv"),
)


def _rename_sgm(key: str) -> str:
    for old, new in _SGM_RENAMES:
        if old.startswith("lora_unet_"):
            if key.startswith(old):
                key = new + key[len(old):]
        else:
            key = key.replace(old + ".", new + ".")
    return key


def module_lookup(model) -> dict[str, str]:
    """kohya flattens module paths with `_`; map each flattened name back to the real one.

    kohya's text-encoder keys carry the `text_model.` level that transformers 5 no longer has
    in CLIPTextModel, so those names are also reachable with that level added.
    """
    lookup = {}
    for name, module in model.named_modules():
        if hasattr(module, "weight"):
            lookup[name.replace(".", "_")] = name
            if not hasattr(model, "text_model") and name.startswith(("encoder.", "embeddings.", "final_layer_norm")):
                lookup["text_model_" + name.replace(".", "_")] = name
    return lookup


def algorithm_of(path, stem: str, names: set[str]) -> str:
    """The algorithm whose tensors `names` are (suffixes after the module stem); refuse mixtures and strays."""
    if stray := sorted(names - KNOWN_KEYS):
        raise CheckpointError(path, f"unsupported adapter tensor {stem + '.' + stray[0]!r}: not a tensor of "
                                    f"{', '.join(ALGORITHMS)} or DoRA")
    found = [name for name, module in ALGORITHMS.items() if names & module.KEYS]
    if len(found) != 1:
        what = "mixes " + " and ".join(found) if found else "has only " + ", ".join(sorted(names))
        raise CheckpointError(path, f"adapter module {stem!r} {what} tensors")
    if lacking := next((sorted(options)[-1] for options in ALGORITHMS[found[0]].REQUIRED if not names & options), None):
        raise CheckpointError(path, f"{found[0]} module {stem!r} lacks its {lacking!r} tensor")
    if "dora_scale" in names and found[0] not in DORA_ALGORITHMS:
        raise CheckpointError(path, f"adapter module {stem!r} has a dora_scale on {found[0]}, which DoRA does not "
                                    "decompose")
    return found[0]


def _grouped(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        stem, _, name = key.partition(".")
        groups.setdefault(stem, {})[name] = value
    return groups


def read_kohya_layers(path, tensors, pipe, lookups: dict[str, dict[str, str]]) -> list[AdapterLayer]:
    """The layers of a kohya-style file resolved against `pipe`'s modules (`lookups` caches `module_lookup`)."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    if any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block")) for k in tensors):
        # SDXL files name UNet blocks as the original SGM code did; diffusers' own mapping
        # (what `load_lora_weights` uses) renames them to diffusers blocks.
        tensors = _maybe_map_sgm_blocks_to_diffusers(dict(tensors), pipe.unet.config)
        tensors = {_rename_sgm(k) if k.startswith("lora_unet_") else k: v for k, v in tensors.items()}
    layers = []
    for stem, parts in sorted(_grouped(tensors).items()):
        prefix = next((p for p in COMPONENT_PREFIXES if stem.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(path, f"adapter key {stem!r} has no known prefix ({', '.join(COMPONENT_PREFIXES)})")
        component = COMPONENT_PREFIXES[prefix]
        model = getattr(pipe, component, None)
        if model is None:
            raise CheckpointError(path, f"adapter targets {component}, which this base model does not have")
        if component not in lookups:
            lookups[component] = module_lookup(model)
        flat = stem[len(prefix):]
        if flat not in lookups[component]:
            raise CheckpointError(path, f"adapter module {stem!r} does not exist in the base model's {component}; "
                                        "it was trained for another architecture")
        module = lookups[component][flat]
        algorithm = algorithm_of(path, stem, set(parts))
        layers.append(_layer(path, stem, algorithm, component, module, parts, model))
    return layers


def _layer(path, stem, algorithm, component, module, parts, model) -> AdapterLayer:
    alpha = float(parts["alpha"].item()) if "alpha" in parts else None
    try:
        if algorithm == "OFT":
            out_features = model.get_submodule(module).weight.shape[0]
            layer = oft.from_parts(component, module, parts, alpha, out_features)
        else:
            layer = ALGORITHMS[algorithm].from_parts(component, module, parts, alpha)
    except KeyError as missing:
        raise CheckpointError(path, f"{algorithm} module {stem!r} lacks its {missing.args[0]!r} tensor") from None
    except ValueError as e:
        raise CheckpointError(path, f"{algorithm} module {stem!r}: {e}") from None
    return lycoris_dora(layer, parts["dora_scale"]) if "dora_scale" in parts else layer
