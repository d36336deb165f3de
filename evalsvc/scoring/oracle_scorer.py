"""The toy world's oracle as a scorer: ground-truth adherence read from pixels (toy-world prompts only)."""

from __future__ import annotations

from PIL import Image

from .registry import Scorer, ScoreRow


class OracleScorer(Scorer):
    name = "oracle"
    version = "1"
    higher_is_better = True
    description = "toy world: share of the caption's attributes (colour, shape, position, background) drawn"

    def compute(self, ctx, cells):
        from trainer.toyworld.oracle import judge, parse_caption

        out = []
        for c in cells:
            if not parse_caption(c.prompt):
                continue  # names no toy-world attribute: nothing to judge
            with Image.open(c.image_path) as image:
                verdict = judge(image, c.prompt)
            out.append(ScoreRow(c.key, float(verdict.score), {"matches": verdict.matches}))
        return out
