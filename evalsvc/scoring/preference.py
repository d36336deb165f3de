"""Optional human-preference scorers, loaded lazily from local weights; skipped with one line when missing.

- `aesthetic`: the LAION aesthetic predictor v2 (christophschuhmann/improved-aesthetic-predictor,
  `sac+logos+ava1-l14-linearMSE.pth`): an MLP (768-1024-128-64-16-1; its dropout is off at inference) on
  the L2-normalised CLIP ViT-L/14 image embedding, predicting a 1-10 rating. It reads the run's cached
  embeddings, so the backbone must give what the head was trained on (768 values for ViT-L/14).
- `pickscore`: PickScore v1 (yuvalkirstain/PickScore_v1, CLIP-H finetuned on Pick-a-Pic choices): the model's
  logit scale times the cosine of prompt and image embeddings, through transformers' CLIPModel, with the
  processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K unless the model folder has its own.

Weights come from `ScoreConfig.preference` (`PreferenceWeights`) paths or the Hugging Face cache; nothing is downloaded. A `.pth`
head is a pickle: it is read only with `allow_pickle` and then with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .backbone import MissingWeights, file_sha256
from .registry import Scorer, ScoreRow

AESTHETIC_LAYERS = ("layers.0", "layers.2", "layers.4", "layers.6", "layers.7")  # the Linear layers, in order
AESTHETIC_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                 "sac+logos+ava1-l14-linearMSE.pth")
AESTHETIC_FETCH = (f"curl -L -o sac+logos+ava1-l14-linearMSE.pth '{AESTHETIC_URL}', then pass --aesthetic-weights "
                   "FILE --allow-pickle")
PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def load_aesthetic_head(path: Path, allow_pickle: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of each Linear layer of the aesthetic MLP, checked to chain."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(f"aesthetic head {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        state = load_file(str(path))
    elif path.suffix in (".pth", ".pt", ".ckpt"):
        if not allow_pickle:
            raise MissingWeights(f"{path} is a pickle; convert it to .safetensors or opt in with --allow-pickle "
                                 "(it is then read with torch.load(weights_only=True))")
        import torch

        state = {k: v.float().numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    else:
        raise MissingWeights(f"{path}: expected a .safetensors (or .pth) aesthetic head")
    try:
        layers = [(state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64))
                  for name in AESTHETIC_LAYERS]
    except KeyError as exc:
        raise MissingWeights(f"{path} is not a LAION aesthetic v2 head: no tensor {exc.args[0]}") from None
    for (w1, _), (w2, _) in zip(layers, layers[1:]):
        if w2.shape[1] != w1.shape[0]:
            raise MissingWeights(f"{path}: layer shapes {w1.shape} and {w2.shape} do not chain")
    if layers[-1][0].shape[0] != 1:
        raise MissingWeights(f"{path}: the last layer gives {layers[-1][0].shape[0]} values, not one rating")
    return layers


def aesthetic_rating(layers, embeddings: np.ndarray) -> np.ndarray:
    """The head on L2-normalised `embeddings` (N, D): one rating per row (no activations, as trained)."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for weight, bias in layers:
        x = x @ weight.T + bias
    return x[:, 0]


class Aesthetic(Scorer):
    name = "aesthetic"
    version = "1"
    higher_is_better = True
    needs_backbone = True
    weights = "the LAION aesthetic v2 head (--aesthetic-weights) on a ViT-L/14 backbone"
    description = "LAION aesthetic predictor v2: a 1-10 rating from the CLIP ViT-L/14 image embedding"

    def skip_reason(self, ctx):
        if ctx.config.preference.aesthetic is None:
            return f"{self.name} skipped: no aesthetic head given; {AESTHETIC_FETCH}"
        return None

    def stored_version(self, ctx):
        return f"{super().stored_version(ctx)}+{file_sha256(Path(ctx.config.preference.aesthetic))[:12]}"

    def compute(self, ctx, cells):
        weights = ctx.config.preference
        layers = load_aesthetic_head(weights.aesthetic, weights.allow_pickle)
        images = ctx.image_embeddings(cells)
        vectors = np.stack([images[c.image_sha256] for c in cells]).astype(np.float64)
        wanted = layers[0][0].shape[1]
        if vectors.shape[1] != wanted:
            raise MissingWeights(f"the aesthetic head reads {wanted}-value image embeddings (ViT-L/14 for the LAION "
                                 f"head); backbone {ctx.backbone.id} gives {vectors.shape[1]}")
        ratings = aesthetic_rating(layers, vectors)
        return [ScoreRow(c.key, float(r), {"backbone": ctx.backbone.id}) for c, r in zip(cells, ratings)]


def cached_snapshot(repo: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss (not cached, offline, partial) means "not available"
        return None


def hub_download_command(repo: str) -> str:
    """The shell command that puts a Hugging Face repository into the model cache."""
    return f"hf download {repo}"


def pickscore_folder(given: Path | None) -> Path | None:
    """The PickScore model folder: the one given, else the cached snapshot (None when not cached)."""
    return Path(given) if given is not None else cached_snapshot(PICKSCORE_REPO)


def pickscore_missing(given: Path | None) -> str | None:
    """Why PickScore cannot run here and how to fetch it, or None when its weights are present."""
    folder = pickscore_folder(given)
    if folder is not None and (folder / "config.json").exists():
        return None
    where = f"{folder} has no config.json" if folder is not None else "it is not in the model cache"
    return (f"{where}; run `{hub_download_command(PICKSCORE_REPO)}` on a connected machine "
            "or pass --pickscore-weights DIR")


def _pickscore_model(folder: str, device: str):
    from transformers import AutoProcessor, CLIPModel

    model_dir = Path(folder)
    has_processor = any((model_dir / n).exists() for n in ("preprocessor_config.json", "processor_config.json"))
    if has_processor and (model_dir / "tokenizer_config.json").exists():
        processor_dir = model_dir
    else:
        processor_dir = cached_snapshot(PICKSCORE_PROCESSOR_REPO)
        if processor_dir is None:
            raise MissingWeights(f"the PickScore processor ({PICKSCORE_PROCESSOR_REPO}) is not in the model cache; "
                                 f"run `{hub_download_command(PICKSCORE_PROCESSOR_REPO)}` on a connected machine")
    processor = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    return processor, model


class PickScore(Scorer):
    name = "pickscore"
    version = "1"
    higher_is_better = True
    weights = f"PickScore v1 ({PICKSCORE_REPO}, a CLIP-H) from a local folder or the model cache"
    description = "PickScore v1: human-preference score of the image for its prompt (logit scale x cosine)"

    def _folder(self, ctx) -> Path | None:
        return pickscore_folder(ctx.config.preference.pickscore)

    def skip_reason(self, ctx):
        missing = pickscore_missing(ctx.config.preference.pickscore)
        return f"{self.name} skipped: {missing}" if missing else None

    def stored_version(self, ctx):
        folder = self._folder(ctx)
        if re.fullmatch(r"[0-9a-f]{40}", folder.name) and folder.parent.name == "snapshots":
            return f"{self.version}+{folder.name[:12]}"  # a model-cache snapshot is named by its commit: no hashing
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), None)
        return f"{self.version}+{file_sha256(weights)[:12] if weights else folder.name}"

    def compute(self, ctx, cells):
        import torch
        from PIL import Image

        processor, model = _pickscore_model(str(self._folder(ctx)), ctx.config.device)
        prompts = sorted({c.prompt for c in cells})
        out = []
        with torch.no_grad():
            text_inputs = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            texts = _unit(model.get_text_features(**text_inputs.to(ctx.config.device)))
            text_of = dict(zip(prompts, texts))
            scale = model.logit_scale.exp()
            for start in range(0, len(cells), ctx.config.batch_size):
                batch = cells[start:start + ctx.config.batch_size]
                pictures = []
                for cell in batch:
                    with Image.open(cell.image_path) as image:
                        pictures.append(image.convert("RGB"))
                image_inputs = processor(images=pictures, return_tensors="pt").to(ctx.config.device)
                images = _unit(model.get_image_features(**image_inputs))
                for cell, vector in zip(batch, images):
                    out.append(ScoreRow(cell.key, float(scale * (vector @ text_of[cell.prompt]))))
        return out


def _unit(features):
    """L2-normalised projected features; transformers 5 returns them as an output's `pooler_output`."""
    import torch

    tensor = features if isinstance(features, torch.Tensor) else features.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1)
