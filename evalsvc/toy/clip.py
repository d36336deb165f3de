"""A tiny CLIP of open_clip's own ViT architecture, trained on the toy world, loaded like real CLIP weights.

`load_toy_clip()` goes through `open_clip.create_model_and_transforms(name, pretrained=<file>)` and
`open_clip.get_tokenizer(name)`, the same path scoring code takes with real weights; the one extra step
is registering the config JSON in `toyclip/`. The tokenizer is open_clip's shipped CLIP BPE (77 tokens).
The weights (fp16 safetensors, cast to fp32 by open_clip's loader) are built by
`python -m trainer.toyworld.clip_train`, which writes its config and retrieval figures into the metadata.
"""

from __future__ import annotations

from pathlib import Path

TOY_CLIP_NAME = "ToyCLIP-ViT-T8"
CONFIG_PATH = Path(__file__).with_name("toyclip") / f"{TOY_CLIP_NAME}.json"
WEIGHTS_PATH = Path(__file__).with_name("assets") / "toyclip.safetensors"


def register_toy_clip() -> str:
    """Add the toy config to open_clip's model registry (a second call changes nothing); returns its name."""
    import open_clip

    if TOY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)
    return TOY_CLIP_NAME


def toy_clip_weights() -> Path:
    """The committed weights file."""
    return WEIGHTS_PATH


def load_toy_clip(device="cpu", weights: Path | str | None = None):
    """(model in eval mode, inference preprocess, tokenizer), loaded exactly as open_clip loads real weights."""
    import open_clip

    path = Path(weights) if weights is not None else toy_clip_weights()
    if not path.is_file():
        raise FileNotFoundError(f"toy CLIP weights not found at {path}; build them with "
                                f"`python -m trainer.toyworld.clip_train --out {path}`")
    name = register_toy_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path), device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)
