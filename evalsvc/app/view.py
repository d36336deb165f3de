"""The metric the app ranks by."""

from __future__ import annotations

PREFERRED_PRIMARY = "clip_t"


def primary_metric(store, run: str, preferred: str = PREFERRED_PRIMARY) -> str | None:
    """The image-level metric best CFGs and recommendations go by: `preferred` when the run has values of it,
    else the run's first stored metric in registry order; None for a run without scores."""
    from ..scoring.results import stored_metrics

    stored = stored_metrics(store, run)
    return preferred if preferred in stored else (stored[0] if stored else None)
