"""A flag: a sign, read from a checkpoint's images, that excludes it from the recommendation, with its evidence."""

from __future__ import annotations

from dataclasses import dataclass

# The signs users read when they pick an epoch; a flag's name is one of these.
FLAG_NAMES = ("undertrained", "overcooked", "memorised", "overfit", "polluting")


@dataclass(frozen=True)
class Flag:
    """`name` because `metric`'s mean over the judged images, `value`, passed `threshold`."""

    name: str
    metric: str
    value: float
    threshold: float
    evidence: str  # the measurement in words: "60% of images are near-copies of a training image (limit 50%)"

    def __post_init__(self):
        if self.name not in FLAG_NAMES:
            raise ValueError(f"flag name must be one of {', '.join(FLAG_NAMES)}, got {self.name!r}")
        if not self.evidence:
            raise ValueError(f"flag {self.name!r} needs its evidence")

    @property
    def text(self) -> str:
        return f"{self.name}: {self.evidence}"

    def as_dict(self) -> dict:
        return {"name": self.name, "metric": self.metric, "value": self.value, "threshold": self.threshold,
                "evidence": self.evidence}
