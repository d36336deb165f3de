"""What a LoRA is for, and so how it is judged: a concept, a character or a style.

A goal names its fidelity metric (does the checkpoint do what it was trained for), its prompt-following
metric (does it still do what the prompt asks), and the metric whose rise on holdout prompts is pollution
(the goal's fidelity to its training set, where the prompt did not ask for it). Every goal's constraints
are the flags (`scoring.goal_flags`, thresholds in `FlagThresholds`): a flagged checkpoint is never recommended.

- concept (a colour, an object, a word the base lacks): the prompt names the concept, so prompt adherence
  (`clip_t`) is the fidelity itself and there is no second objective;
- character (one identity in new poses and places, DreamBooth's subject fidelity against prompt fidelity):
  fidelity is the likeness of the subject, cut out and centred, to the training images' (`identity`), prompt
  following is `clip_t` with the trigger removed;
- style (a look applied to any content): fidelity is likeness to the style's training images, prompt
  following is `clip_t` with the style's trigger removed (the content still as asked).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Goal:
    name: str
    fidelity: str
    following: str | None  # None: the fidelity metric is prompt adherence itself
    leak: str  # pollution: this metric's gain over the base on holdout prompts
    description: str
    diversity: str = "diversity_ssim"  # overfit: this per-prompt set metric across seeds on holdout prompts

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the goal's verdict reads (the flags' own included)."""
        return tuple(dict.fromkeys(m for m in (self.fidelity, self.following, self.leak, self.diversity,
                                               "memorised", "overcook") if m))


GOALS = {
    "concept": Goal("concept", "clip_t", None, "clip_i",
                    "the concept as prompted (clip_t); pollution: holdout images drawn towards the training set"),
    "character": Goal("character", "identity", "clip_t_untriggered", "identity",
                      "likeness of the subject, cut out, to the training images' (identity) and the prompt without "
                      "the trigger (clip_t_untriggered)"),
    "style": Goal("style", "clip_i", "clip_t_untriggered", "clip_i",
                  "likeness to the style's training images (clip_i) and the content as prompted "
                  "(clip_t_untriggered)"),
}


def goal_named(name: str) -> Goal:
    if name not in GOALS:
        raise InputError(f"unknown goal {name!r} (known: {', '.join(GOALS)})")
    return GOALS[name]


def run_goal(db, run: str) -> Goal | None:
    """The goal the run's suite declares (None when it declares none); refused when its suites disagree."""
    names = sorted({g for g, in db.execute("SELECT DISTINCT s.goal FROM grid_cells g JOIN suites s ON s.hash = "
                                            "g.suite_hash WHERE g.run = ? AND s.goal IS NOT NULL", [run]).fetchall()})
    if len(names) > 1:
        raise InputError(f"run {run!r}: its suites declare different goals ({', '.join(names)}); "
                         f"choose one with --goal")
    return goal_named(names[0]) if names else None
