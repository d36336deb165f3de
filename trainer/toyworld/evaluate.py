"""How well a pipeline draws toy-world captions, by the oracle, sampled through the evaluator's engine."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from .oracle import ATTRIBUTES, judge_scene
from .world import IMAGE_SIZE, Scene


@dataclass(frozen=True)
class OracleSampling:
    seeds: tuple[int, ...] = (1,)
    cfg: float = 5.0
    steps: int = 20
    sampler: str = "euler"
    batch_size: int = 32


def sample_scenes_with(pipe, scenes: list[Scene], sampling: OracleSampling = OracleSampling()):
    """(scene, seed, image) for every scene x seed, drawn by `pipe` through the engine's batched loop."""
    from evalsvc.sampling.engine import CellSpec, PromptCache, decode_latents, denoise

    cache = PromptCache()
    jobs = [(scene, seed) for seed in sampling.seeds for scene in scenes]
    out = []
    for start in range(0, len(jobs), sampling.batch_size):
        batch = jobs[start:start + sampling.batch_size]
        cells = [CellSpec(scene.caption, "", seed, sampling.cfg, sampling.steps, sampling.sampler, IMAGE_SIZE,
                          IMAGE_SIZE) for scene, seed in batch]
        with torch.no_grad():
            images = decode_latents(pipe, denoise(pipe, cells, cache, "oracle"))
        out.extend((scene, seed, image) for (scene, seed), image in zip(batch, images))
    return out


def oracle_accuracy(pipe, scenes: list[Scene], sampling: OracleSampling = OracleSampling()) -> dict[str, float]:
    """Per-attribute accuracy, the mean oracle score and the share of images with every attribute right."""
    hits: dict[str, list[bool]] = defaultdict(list)
    scores = []
    for scene, _, image in sample_scenes_with(pipe, scenes, sampling):
        judgement = judge_scene(image, scene)
        scores.append(judgement.score)
        hits["all"].append(judgement.correct)
        for name in ATTRIBUTES:
            hits[name].append(judgement.matches[name])
    figures = {name: sum(v) / len(v) for name, v in hits.items()}
    figures["score"] = sum(scores) / len(scores)
    figures["images"] = len(scores)
    return figures
