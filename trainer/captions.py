"""Caption augmentation as pure functions: the same caption, ops and `random.Random` state give the same result.

Order of operations (as kohya's): dropout first (one `rng.random()` draw, only when dropout > 0; a dropped
caption is the empty, unconditional caption, trigger word included), then the trigger word is prepended
as a tag if no tag equals it, then tags after the first `keep_tokens` are shuffled. So `keep_tokens = 1`
keeps an added trigger word first, exactly as if it had been written at the start of every caption file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from evalsvc.errors import InputError


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def shuffle_tags(tags, keep_tokens: int, rng: random.Random) -> list[str]:
    """The first `keep_tokens` tags in place, the rest shuffled by `rng.shuffle`."""
    tags = list(tags)
    head, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return head + rest


@dataclass(frozen=True)
class CaptionOps:
    """What `apply_caption_ops` does to each caption; built from `[dataset]` by `caption_ops_from`."""

    shuffle_tags: bool = False
    keep_tokens: int = 0
    dropout: float = 0.0
    trigger_word: str | None = None

    def __post_init__(self):
        if not isinstance(self.keep_tokens, int) or isinstance(self.keep_tokens, bool) or self.keep_tokens < 0:
            raise InputError(f"keep_tokens must be an integer >= 0, got {self.keep_tokens!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout <= 1:
            raise InputError(f"caption dropout must be in [0, 1], got {self.dropout!r}")
        if self.trigger_word is not None and not (
            isinstance(self.trigger_word, str) and self.trigger_word.strip() and "," not in self.trigger_word
        ):
            raise InputError(f"trigger_word must be a non-empty string without ',', got {self.trigger_word!r}")


def apply_caption_ops(caption: str, ops: CaptionOps, rng: random.Random) -> str:
    """The caption after dropout, trigger word and tag shuffling, tags joined with ", "."""
    if ops.dropout > 0 and rng.random() < ops.dropout:
        return ""
    tags = split_tags(caption)
    trigger = ops.trigger_word.strip() if ops.trigger_word else None
    if trigger and trigger not in tags:
        tags.insert(0, trigger)
    if ops.shuffle_tags:
        tags = shuffle_tags(tags, ops.keep_tokens, rng)
    return ", ".join(tags)
