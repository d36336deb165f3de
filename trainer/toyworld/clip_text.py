"""The toy CLIP's text tower as a transformers `CLIPTextModel`: the toy base's frozen text encoder.

SD1.5 conditions on the hidden states of a pretrained CLIP text encoder that it never trains; the toy
base does the same with the toy CLIP (`evalsvc/toy/clip.py`), trained contrastively on the whole world.
A text encoder trained from scratch with the UNet separates only the words that pay off first (colour,
background) and leaves shape and position words almost equal; the toy CLIP tells them all apart.
open_clip's text transformer and transformers' CLIP text model are the same network (causal
attention, pre-LayerNorm blocks, final LayerNorm); only the parameter names and the packed q/k/v differ.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _hf_state_dict(open_clip_state: dict[str, torch.Tensor], layers: int, prefix: str) -> dict[str, torch.Tensor]:
    out = {
        f"{prefix}embeddings.token_embedding.weight": open_clip_state["token_embedding.weight"],
        f"{prefix}embeddings.position_embedding.weight": open_clip_state["positional_embedding"],
        f"{prefix}final_layer_norm.weight": open_clip_state["ln_final.weight"],
        f"{prefix}final_layer_norm.bias": open_clip_state["ln_final.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"{prefix}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = open_clip_state[src + f"attn.in_proj_{kind}"].chunk(3)
            out[dst + f"self_attn.q_proj.{kind}"] = q
            out[dst + f"self_attn.k_proj.{kind}"] = k
            out[dst + f"self_attn.v_proj.{kind}"] = v
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[dst + f"{b}.{kind}"] = open_clip_state[src + f"{a}.{kind}"]
    return {k: v.float().contiguous() for k, v in out.items()}


def toy_clip_text_encoder(weights: Path | None = None):
    """A `CLIPTextModel` with the toy CLIP's text weights (float32)."""
    import json

    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from evalsvc.toy.clip import CONFIG_PATH, toy_clip_weights

    text = json.loads(CONFIG_PATH.read_text())["text_cfg"]
    width, layers = text["width"], text["layers"]
    config = CLIPTextConfig(
        vocab_size=text["vocab_size"], hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=text["heads"], max_position_embeddings=text["context_length"], hidden_act="gelu",
        layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    model = CLIPTextModel(config)
    state = load_file(str(weights or toy_clip_weights()))
    # transformers 4 nests the network under `text_model.`; 5 does not.
    prefix = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
    model.load_state_dict(_hf_state_dict(state, layers, prefix), strict=True)
    return model.eval()
