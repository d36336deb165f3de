"""The report's goal section: what the run is judged as, its constraints, and each candidate per criterion."""

from __future__ import annotations

from .model import Report


def constraint_lines(report: Report) -> list[str]:
    """The goal in one sentence, then each constraint with its threshold."""
    goal, t = report.config.goal, report.config.analysis(None).flags
    if goal is None:
        return []
    following = f", prompt following by {goal.following}" if goal.following else \
        " (the prompt names the concept, so adherence to it is the fidelity; no second objective)"
    return [
        f"Judged as a {goal.name} LoRA: fidelity by {goal.fidelity}{following}, on {report.config.prompt_role} "
        f"prompts. The recommendation is the earliest checkpoint that meets every constraint and ties the best on "
        f"fidelity and prompt following together.",
        f"undertrained: {goal.fidelity} gain over the base below {t.undertrained_gain_share:.0%} of the best "
        f"unflagged checkpoint's",
        f"overfit: {goal.diversity} across seeds on holdout prompts below {t.overfit_diversity_share:.0%} of the "
        f"base's",
        f"polluting: {goal.leak} rises over the base on holdout prompts by more than "
        f"{t.polluting_leak_share:.0%} of its rise on target prompts",
        f"memorised: more than {t.memorised_share:.0%} of images near-copies of a training image",
        f"overcooked: mean overcook z-score against the base above {t.overcook:g}",
    ]


def criteria_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each candidate of the overall recommendation, its status, each criterion's mean and
    paired difference to that criterion's best (✓ ties it), and its flags."""
    rec = report.recommendations["overall"]
    verdicts = [v for v in rec.verdicts if v.criteria]
    if not verdicts:
        return [], []
    header = ["checkpoint", "status"] + [f"{c.objective.label} ({c.objective.metric})" for c in verdicts[0].criteria]
    header.append("flags")
    rows = []
    for v in verdicts:
        cells = [f"{v.name} ({v.where})" if v.where else v.name, v.status]
        for c in v.criteria:
            if c.difference is None:
                cells.append(f"{c.mean.mean:.4g}")
            else:
                d = c.difference
                mark = "✓" if c.ties_best else "✗"
                cells.append(f"{c.mean.mean:.4g} ({d.mean:+.3g}, CI {d.ci_low:+.3g} to {d.ci_high:+.3g}) {mark}")
        cells.append(", ".join(f.name for f in v.flags) or "–")
        rows.append(cells)
    return header, rows
