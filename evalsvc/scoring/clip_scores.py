"""CLIP-space scorers: prompt adherence (clip_t), similarity to the training set (clip_i) and to its
closest image (nearest_train, the memorisation flag)."""

from __future__ import annotations

import re

import numpy as np

from .registry import Scorer, ScoreRow


def remove_trigger(prompt: str, trigger: str) -> str:
    """`prompt` without the trigger word (as a whole word, any case) and the comma or space it leaves."""
    text = re.sub(rf"\b{re.escape(trigger)}\b", "", prompt, flags=re.IGNORECASE)
    return re.sub(r"\s*,\s*(,\s*)+", ", ", re.sub(r"\s{2,}", " ", text)).strip(" ,")


class ClipT(Scorer):
    name = "clip_t"
    version = "1"
    higher_is_better = True
    needs_backbone = True
    weights = "an open_clip backbone (default ViT-L-14-quickgelu, openai)"
    description = "cosine of image and prompt embeddings (prompt adherence)"

    def text(self, ctx, prompt: str) -> str:
        return prompt

    def compute(self, ctx, cells):
        images = ctx.image_embeddings(cells)
        texts = sorted({self.text(ctx, c.prompt) for c in cells})
        text_vectors = dict(zip(texts, ctx.backbone.embed_texts(texts)))
        return [ScoreRow(c.key, float(images[c.image_sha256] @ text_vectors[self.text(ctx, c.prompt)]),
                         {"backbone": ctx.backbone.id}) for c in cells]


class ClipTUntriggered(ClipT):
    name = "clip_t_untriggered"
    description = "clip_t with the trigger word removed from the prompt (editability)"

    def skip_reason(self, ctx):
        if not ctx.config.trigger:
            return f"{self.name} skipped: no trigger word given (--trigger WORD)"
        return None

    def text(self, ctx, prompt: str) -> str:
        return remove_trigger(prompt, ctx.config.trigger)


class ClipI(Scorer):
    name = "clip_i"
    version = "1"
    higher_is_better = True
    needs_backbone = True
    needs_reference = True
    weights = ClipT.weights
    description = "mean cosine of the image with every training image (fidelity to the training set)"

    def compute(self, ctx, cells):
        images = ctx.image_embeddings(cells)
        _, reference = ctx.reference_embeddings
        return [ScoreRow(c.key, float((reference @ images[c.image_sha256]).mean()), {"backbone": ctx.backbone.id,
                                                                                      "references": len(reference)})
                for c in cells]


class NearestTrain(Scorer):
    name = "nearest_train"
    version = "1"
    higher_is_better = False  # high means a near copy of a training image
    needs_backbone = True
    needs_reference = True
    weights = ClipT.weights
    description = "cosine of the image with its closest training image (memorisation)"

    def compute(self, ctx, cells):
        images = ctx.image_embeddings(cells)
        files, reference = ctx.reference_embeddings
        out = []
        for c in cells:
            similarities = reference @ images[c.image_sha256]
            nearest = int(np.argmax(similarities))
            out.append(ScoreRow(c.key, float(similarities[nearest]),
                                {"backbone": ctx.backbone.id, "nearest": files[nearest].name}))
        return out


class Memorised(Scorer):
    name = "memorised"
    version = "1"
    higher_is_better = False
    needs_backbone = True
    needs_reference = True
    weights = ClipT.weights
    description = ("1 when the image is closer to a training image than 95% of training images are to their own "
                   "nearest other training image (a near-copy), else 0; the mean is the share of near-copies")

    def compute(self, ctx, cells):
        images = ctx.image_embeddings(cells)
        files, reference = ctx.reference_embeddings
        if len(reference) < 2:
            return []
        among = reference @ reference.T
        np.fill_diagonal(among, -np.inf)
        threshold = float(np.quantile(among.max(axis=1), 0.95))
        out = []
        for c in cells:
            similarities = reference @ images[c.image_sha256]
            nearest = int(np.argmax(similarities))
            out.append(ScoreRow(c.key, float(similarities[nearest] > threshold),
                                {"similarity": float(similarities[nearest]), "threshold": threshold,
                                 "nearest": files[nearest].name}))
        return out


class Identity(Scorer):
    name = "identity"
    version = "1"
    higher_is_better = True
    needs_backbone = True
    needs_reference = True
    weights = ClipT.weights
    description = ("cosine of the image's subject, cut out and centred (`subject.subject_view`), with the mean of "
                   "the training images' subjects: a character's likeness, whatever its pose, place and background")

    def compute(self, ctx, cells):
        from PIL import Image

        from .similarity import l2_normalize
        from .subject import subject_view

        def embed(paths):
            out = []
            for start in range(0, len(paths), ctx.config.batch_size):
                views = [subject_view(Image.open(p)) for p in paths[start:start + ctx.config.batch_size]]
                out.append(ctx.backbone.embed_images(views))
            return np.concatenate(out)

        files, _ = ctx.reference_embeddings
        centre = l2_normalize(embed(files).mean(axis=0, keepdims=True))[0]
        by_image = {}
        for c in cells:
            by_image.setdefault(c.image_sha256, c.image_path)
        vectors = dict(zip(by_image, embed(list(by_image.values()))))
        return [ScoreRow(c.key, float(vectors[c.image_sha256] @ centre), {"backbone": ctx.backbone.id,
                                                                         "references": len(files)}) for c in cells]
