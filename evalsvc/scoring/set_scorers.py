"""Scorers of groups of images: diversity across seeds of one prompt, and KID/FID against the reference."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import distribution, similarity
from .cells import cell_pixels
from .registry import Scorer, SetScoreRow


def _groups(cells, by_prompt: bool):
    groups = defaultdict(list)
    for cell in cells:
        groups[(cell.checkpoint, cell.setting, cell.prompt_id if by_prompt else "")].append(cell)
    return groups


def _sorted(groups):
    return sorted(groups.items(), key=lambda item: (item[0][0], item[0][1].sort_key(), item[0][2]))


class Diversity(Scorer):
    name = "diversity"
    version = "1"
    higher_is_better = True
    level = "set"
    needs_backbone = True
    weights = "an open_clip backbone"
    description = "mean pairwise embedding distance across the seeds of one prompt (low: same image every time)"

    def compute(self, ctx, cells):
        vectors = ctx.image_embeddings(cells)
        out = []
        for (sha, setting, prompt_id), group in _sorted(_groups(cells, by_prompt=True)):
            if len(group) >= 2:
                value = similarity.diversity(np.stack([vectors[c.image_sha256] for c in group]))
                out.append(SetScoreRow(sha, setting, prompt_id, value, len(group), details={"backbone": ctx.backbone.id}))
        return out


class DiversitySsim(Scorer):
    name = "diversity_ssim"
    version = "1"
    higher_is_better = True
    level = "set"
    description = ("1 - mean pairwise SSIM across the seeds of one prompt (low: the same composition and detail "
                   "every time; the MS-SSIM mode-collapse measure of GAN work, at one scale)")

    def compute(self, ctx, cells):
        out = []
        for (sha, setting, prompt_id), group in _sorted(_groups(cells, by_prompt=True)):
            if len(group) >= 2:
                pixels = cell_pixels(group)
                pairs = [(i, j) for i in range(len(group)) for j in range(i + 1, len(group))]
                values = similarity.ssim(pixels[[i for i, _ in pairs]], pixels[[j for _, j in pairs]])
                out.append(SetScoreRow(sha, setting, prompt_id, float(1 - values.mean()), len(group),
                                       std=float(values.std())))
        return out


class _Distribution(Scorer):
    higher_is_better = False
    level = "set"
    needs_backbone = True
    needs_reference = True
    version = distribution.VERSION
    weights = "an open_clip backbone (its image embeddings are the features; Inception is not used)"

    def compute(self, ctx, cells):
        vectors = ctx.image_embeddings(cells)
        _, reference = ctx.reference_embeddings
        out = []
        for (sha, setting, _), group in _sorted(_groups(cells, by_prompt=False)):
            fake = np.stack([vectors[c.image_sha256] for c in group])
            if len(group) < 2 or len(reference) < 2:
                continue
            result = distribution.DISTRIBUTION_METRICS[self.name](reference, fake)
            out.append(SetScoreRow(sha, setting, "", result.value, len(group), result.std, {
                "backbone": ctx.backbone.id, "n_real": result.n_real, "n_fake": result.n_fake,
                "subset_size": result.subset_size, "subsets": result.subsets, "feature_dim": result.feature_dim,
                "resize": "open_clip preprocess (bicubic, antialias)", "versions": result.library_versions}))
        return out


class Kid(_Distribution):
    name = "kid"
    description = "Kernel Inception Distance to the reference images, on CLIP features (default below 2,048 images)"


class Fid(_Distribution):
    name = "fid"
    description = "Frechet distance to the reference images, on CLIP features (for 2,048 images or more)"
