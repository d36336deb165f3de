"""Scorers that compare a checkpoint's image with the base model's image for the same prompt, seed and
setting (the engine gives both the same starting noise): overcooking and drift on holdout prompts."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import overcook, similarity
from .cells import cell_pixels
from .registry import Scorer, ScoreRow


class _NeedsBase(Scorer):
    def skip_reason(self, ctx):
        if not any(c.is_base for c in ctx.cells):
            return f"{self.name} skipped: the run has no sampled base-model images to compare with"
        return None


class Overcook(_NeedsBase):
    name = "overcook"
    version = overcook.VERSION
    higher_is_better = False
    description = ("'deep-fried' z-score: saturation, clipped pixels, contrast and high-frequency energy against "
                   "the base model's images of the same prompt, in units of their spread over all base images "
                   "(0 = like the base)")

    def compute(self, ctx, cells):
        base_by_prompt = defaultdict(list)  # (setting, prompt) -> the base's cells
        for cell in ctx.cells:
            if cell.is_base:
                base_by_prompt[(cell.setting, cell.prompt_id)].append(cell)
        base_by_setting = defaultdict(list)
        for (setting, _), group in base_by_prompt.items():
            base_by_setting[setting].extend(group)
        out = []
        by_prompt = defaultdict(list)
        for cell in cells:
            by_prompt[(cell.setting, cell.prompt_id)].append(cell)
        spreads = {}
        for (setting, prompt_id), group in by_prompt.items():
            # the base's spread at the same setting (4-step images are not judged against 20-step ones)
            all_base = base_by_setting.get(setting, [])
            if len(all_base) < 2:
                continue
            if setting not in spreads:
                spreads[setting] = overcook.overcook_stats(cell_pixels(all_base))
            spread = spreads[setting]
            base = base_by_prompt.get((setting, prompt_id), [])
            reference = overcook.overcook_stats(cell_pixels(base)) if base else spread
            stats = overcook.overcook_stats(cell_pixels(group))
            scores = overcook.overcook_score(stats, reference, spread=spread)
            for i, (cell, value) in enumerate(zip(group, scores)):
                out.append(ScoreRow(cell.key, float(value), {
                    "saturation": float(stats.saturation[i]), "clipped": float(stats.clipped[i]),
                    "contrast": float(stats.contrast[i]), "high_frequency": float(stats.high_frequency[i]),
                    "reference": "same prompt" if base else "all base images"}))
        return out


class _Drift(_NeedsBase):
    """On holdout prompts (which the finetune should leave alone), paired with the base's image."""

    higher_is_better = False

    def pairs(self, ctx, cells):
        base = ctx.base_cells()
        return [(c, base[(c.prompt_id, c.seed, c.setting)]) for c in cells
                if c.prompt_role == "holdout" and not c.is_base and (c.prompt_id, c.seed, c.setting) in base]


class Drift(_Drift):
    name = "drift"
    version = "1"
    description = "1 - SSIM between the image and the base's image of the same holdout prompt, seed and setting"

    def compute(self, ctx, cells):
        pairs = self.pairs(ctx, cells)
        if not pairs:
            return []
        values = similarity.ssim(cell_pixels([c for c, _ in pairs]), cell_pixels([b for _, b in pairs]))
        return [ScoreRow(c.key, float(1 - v), {"ssim": float(v)}) for (c, _), v in zip(pairs, values)]


class DriftClip(_Drift):
    name = "drift_clip"
    version = "1"
    needs_backbone = True
    weights = "an open_clip backbone"
    description = "1 - cosine between the image's and the base image's embeddings (same holdout prompt, seed, setting)"

    def compute(self, ctx, cells):
        pairs = self.pairs(ctx, cells)
        if not pairs:
            return []
        vectors = ctx.image_embeddings([c for pair in pairs for c in pair])
        values = similarity.embedding_distance(np.stack([vectors[c.image_sha256] for c, _ in pairs]),
                                               np.stack([vectors[b.image_sha256] for _, b in pairs]))
        return [ScoreRow(c.key, float(v), {"backbone": ctx.backbone.id}) for (c, _), v in zip(pairs, values)]
