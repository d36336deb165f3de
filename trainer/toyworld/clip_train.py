"""Train the toy CLIP (`evalsvc.toy.clip`) contrastively on freshly drawn images of every toy-world scene.

Each step draws one new image for each of `batch_size` distinct scenes, so no batch holds a false
negative. The scenes come in shape triples (one (colour, position, background) in all three shapes):
circle against square is the slow distinction to learn, so every image meets its hard negatives. The
loss is symmetric InfoNCE with open_clip's learnable `logit_scale`: each image against all 225
captions, each caption against the batch's images (open_clip's `ClipLoss` when the batch is every
scene). All five colours are used, purple included: the CLIP must judge the concept the diffusion base
lacks. `retrieval_accuracy` scores the model on new images drawn from another seed. Deterministic from
the seed on a given machine and thread count.

    python -m trainer.toyworld.clip_train --out evalsvc/toy/assets/toyclip.safetensors --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from evalsvc.toy.clip import TOY_CLIP_NAME, register_toy_clip
from trainer.save import write_atomically
from trainer.toyworld.world import COLOURS, SHAPES, Scene, all_scenes, draw, sample_scenes

ATTRIBUTES = ("colour", "shape", "position", "background")
EVAL_SEED_OFFSET = 1000  # the CLI evaluates on images drawn from seed + this


@dataclass(frozen=True)
class ClipTrainConfig:
    """How to train the toy CLIP; nonsense is refused on construction."""

    seed: int = 0
    steps: int = 1000
    batch_size: int = 96  # distinct scenes per batch, in shape triples: a multiple of 3, at most 225
    lr: float = 2e-3
    warmup_steps: int = 50  # linear warmup, then cosine decay to 0
    weight_decay: float = 0.1  # on matrices only, as open_clip's trainer does

    def __post_init__(self):
        scenes = len(all_scenes())
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (3 <= self.batch_size <= scenes and self.batch_size % len(SHAPES) == 0):
            raise ValueError(f"batch_size must be a multiple of {len(SHAPES)} in [3, {scenes}], got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def new_model(seed: int):
    """A freshly initialised toy CLIP; the init depends only on `seed`."""
    torch.manual_seed(seed)
    return open_clip.create_model(register_toy_clip())


def inference_preprocess(model):
    """The transform `create_model_and_transforms` returns for inference (its third value)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def to_tensor(images, preprocess) -> torch.Tensor:
    """A batch as `preprocess` would make it (64x64 images need no resize or crop), without the PIL loop."""
    from torchvision.transforms import Normalize

    norm = next(t for t in preprocess.transforms if isinstance(t, Normalize))
    pixels = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in images]))
    pixels = pixels.permute(0, 3, 1, 2).float().div(255)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (norm.mean, norm.std))
    return (pixels - mean) / std


def shape_triples(rng: random.Random, scenes: list[Scene], batch_size: int) -> list[int]:
    """Indices into `scenes` of `batch_size // 3` random (colour, position, background), each in every shape."""
    index = {scene: i for i, scene in enumerate(scenes)}
    rest = sorted({(s.colour, s.position, s.background) for s in scenes})
    return [index[Scene(c, shape, p, b)] for c, p, b in rng.sample(rest, batch_size // len(SHAPES)) for shape in SHAPES]


def contrastive_loss(model, images: torch.Tensor, picked: list[int], tokens: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: image i against every caption in `tokens` (its own is `picked[i]`), and caption
    `picked[i]` against the batch's images."""
    image = model.encode_image(images, normalize=True)
    text = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp() * image @ text.T
    picked = torch.as_tensor(picked)
    return (F.cross_entropy(logits, picked) + F.cross_entropy(logits[:, picked].T, torch.arange(len(picked)))) / 2


def _optimizer(model, config: ClipTrainConfig):
    def no_decay(name, p):
        return p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name

    params = list(model.named_parameters())
    groups = [{"params": [p for n, p in params if no_decay(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in params if not no_decay(n, p)], "weight_decay": config.weight_decay}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)

    def factor(step):
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_steps(model, config: ClipTrainConfig) -> Iterator[tuple[int, float]]:
    """Train `model` in place; yields (step, loss) after each optimizer step."""
    preprocess = inference_preprocess(model)
    scenes = all_scenes(tuple(COLOURS))
    tokens = open_clip.get_tokenizer(TOY_CLIP_NAME)([s.caption for s in scenes])
    rng = random.Random(f"toyclip-train:{config.seed}")
    torch.manual_seed(config.seed)
    optimizer, schedule = _optimizer(model, config)
    model.train()
    for step in range(1, config.steps + 1):
        picked = shape_triples(rng, scenes, config.batch_size)
        images = to_tensor([draw(scenes[i], rng) for i in picked], preprocess)
        loss = contrastive_loss(model, images, picked, tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as open_clip's trainer does
        yield step, loss.item()
    model.eval()


def train_toy_clip(config: ClipTrainConfig, progress: bool = True):
    """A toy CLIP trained as `config` says (a tqdm bar shows the loss when `progress`)."""
    model = new_model(config.seed)
    bar = tqdm(train_steps(model, config), total=config.steps, disable=not progress,
               desc="toy CLIP", unit="step")
    for _, loss in bar:
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    return model


@torch.no_grad()
def retrieval_accuracy(model, preprocess, tokenizer, n_images: int, seed: int) -> dict[str, float]:
    """Top-1 retrieval on `n_images` new images of all 225 scenes drawn from `seed`.

    image_to_text: the nearest of all 225 captions is the image's own; text_to_image: for each scene
    shown, the nearest of the `n_images` images shows that scene; colour/shape/position/background: the
    nearest caption names the image's value of that attribute.
    """
    captions = all_scenes(tuple(COLOURS))
    shown = sample_scenes(n_images, seed, colours=tuple(COLOURS))
    rng = random.Random(f"toyclip-eval:{seed}")
    model.eval()
    text = model.encode_text(tokenizer([s.caption for s in captions]), normalize=True)
    pixels = torch.stack([preprocess(draw(scene, rng)) for scene in shown])
    image = torch.cat([model.encode_image(chunk, normalize=True) for chunk in pixels.split(256)])
    similarity = image @ text.T
    best_caption = [captions[i] for i in similarity.argmax(dim=1).tolist()]
    figures = {"image_to_text": float(np.mean([b == s for b, s in zip(best_caption, shown)]))}
    per_scene = {}
    for column, scene in enumerate(captions):
        if scene in shown:
            per_scene[scene] = shown[similarity[:, column].argmax().item()] == scene
    figures["text_to_image"] = float(np.mean(list(per_scene.values())))
    for attribute in ATTRIBUTES:
        figures[attribute] = float(np.mean([getattr(b, attribute) == getattr(s, attribute)
                                            for b, s in zip(best_caption, shown)]))
    return figures


def save_toy_clip(model, path: Path, *, config: ClipTrainConfig, build_seconds: float,
                  figures: dict[str, float], eval_seed: int, eval_images: int) -> Path:
    """fp16 safetensors that `open_clip.create_model_and_transforms(name, pretrained=path)` loads."""
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    metadata = {
        "open_clip_model": TOY_CLIP_NAME,
        "config": json.dumps(dataclasses.asdict(config)),
        "seed": str(config.seed),
        "steps": str(config.steps),
        "build_seconds": f"{build_seconds:.1f}",
        "eval_seed": str(eval_seed),
        "eval_images": str(eval_images),
        "retrieval": json.dumps(figures),
        "torch": torch.__version__,
    }
    return write_atomically(state, metadata, Path(path))


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate on held-out images, save; prints the wall time and the figures."""
    defaults = ClipTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m trainer.toyworld.clip_train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--eval-images", type=int, default=900, help="held-out images for the figures")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = ClipTrainConfig(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 warmup_steps=args.warmup_steps)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = train_toy_clip(config, progress=not args.no_progress)
    train_seconds = time.perf_counter() - started
    eval_seed = config.seed + EVAL_SEED_OFFSET
    figures = retrieval_accuracy(model, inference_preprocess(model), open_clip.get_tokenizer(TOY_CLIP_NAME),
                                 args.eval_images, eval_seed)
    path = save_toy_clip(model, args.out, config=config, build_seconds=train_seconds, figures=figures,
                         eval_seed=eval_seed, eval_images=args.eval_images)
    print(f"trained {config.steps} steps in {train_seconds:.1f} s ({time.perf_counter() - started:.1f} s with the "
          f"evaluation); wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(f"held-out retrieval ({args.eval_images} images, seed {eval_seed}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
