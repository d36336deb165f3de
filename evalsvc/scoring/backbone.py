"""CLIP backbones for scoring, loaded through open_clip from a local file or the user's model cache.

Nothing is downloaded while scoring: a pretrained tag (`openai`, `laion2b_s32b_b82k`, ...) is used
only when its weights are already in the Hugging Face cache, and a missing one raises
`MissingWeights` with the command that fetches it. The toy CLIP (`--backbone toy`) is the committed one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import EvalsvcError

DEFAULT_MODEL = "ViT-L-14-quickgelu"
DEFAULT_PRETRAINED = "openai"


class MissingWeights(EvalsvcError):
    """A scorer's weights are not on this machine; the message says what to download."""


@dataclass(frozen=True)
class BackboneSpec:
    """An open_clip model name and its weights: a pretrained tag or a local file."""

    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED

    @classmethod
    def toy(cls) -> "BackboneSpec":
        from ..toy.clip import TOY_CLIP_NAME, toy_clip_weights

        return cls(TOY_CLIP_NAME, str(toy_clip_weights()))

    @classmethod
    def parse(cls, text: str | None, weights: str | None = None) -> "BackboneSpec | None":
        """`toy`, `MODEL` or `MODEL:TAG`; `weights` (a file) overrides the tag. None when neither is given
        (scoring then takes the run's last backbone, else the default)."""
        if text in (None, ""):
            return cls(DEFAULT_MODEL, weights) if weights else None
        if text == "toy":
            return cls.toy()
        model, _, tag = text.partition(":")
        return cls(model, weights or tag or DEFAULT_PRETRAINED)

    @property
    def is_file(self) -> bool:
        return Path(self.pretrained).suffix in (".safetensors", ".bin", ".pt", ".pth")

    @cached_property
    def id(self) -> str:
        """Names the embeddings in the store: model and tag, or model and the weight file's content hash
        (hashed once per spec: a CLIP-L file is 1.7 GB)."""
        if self.is_file:
            return f"{self.model}@{file_sha256(Path(self.pretrained))[:16]}"
        return f"{self.model}:{self.pretrained}"


def file_sha256(path: Path) -> str:
    if not path.is_file():
        raise MissingWeights(f"CLIP weights file {path} does not exist")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_tag_file(model: str, tag: str) -> str | None:
    """The cached weight file of an open_clip pretrained tag, or None (never downloads)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    config = open_clip.get_pretrained_cfg(model, tag)
    if not config:
        raise MissingWeights(f"open_clip knows no pretrained weights {tag!r} for {model!r}; "
                             f"see open_clip.list_pretrained()")
    repo = config.get("hf_hub", "").rstrip("/")
    if repo:
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found
    return None


def require_weights(spec: BackboneSpec) -> str:
    """The local weight file for `spec`, or MissingWeights saying how to get it."""
    if spec.is_file:
        if not Path(spec.pretrained).is_file():
            raise MissingWeights(f"CLIP weights file {spec.pretrained} does not exist")
        return spec.pretrained
    found = _cached_tag_file(spec.model, spec.pretrained)
    if found is None:
        raise MissingWeights(
            f"CLIP weights {spec.model} ({spec.pretrained}) are not in the model cache; on a machine with "
            f"internet run: {fetch_command(spec)}, or pass --backbone MODEL --clip-weights FILE")
    return found


def fetch_command(spec: BackboneSpec) -> str:
    """The shell command that puts a pretrained tag's weights into the model cache."""
    return (f"python -c \"import open_clip; open_clip.create_model_and_transforms('{spec.model}', "
            f"pretrained='{spec.pretrained}')\"")


class ClipBackbone:
    """A loaded open_clip model: L2-normalised image and text embeddings as float32 numpy arrays."""

    def __init__(self, spec: BackboneSpec, device: str = "cpu"):
        import open_clip

        if spec.model.startswith("ToyCLIP"):
            from ..toy.clip import register_toy_clip

            register_toy_clip()
        weights = require_weights(spec)
        self.spec, self.id, self.device = spec, spec.id, device
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=weights,
                                                                               device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(spec.model)

    @torch.no_grad()
    def embed_images(self, images) -> np.ndarray:
        batch = torch.stack([self.preprocess(image.convert("RGB")) for image in images]).to(self.device)
        features = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        features = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()
