"""Statistics over scores: cluster-bootstrap means, paired differences, Pareto fronts, recommendations."""

from .bootstrap import BootstrapConfig, Estimate, cluster_bootstrap, estimate_scores
from .compare import best_setting, paired_difference
from .pareto import pareto_front
from .recommend import Candidate, Recommendation, Verdict, recommend

__all__ = [
    "BootstrapConfig", "Estimate", "cluster_bootstrap", "estimate_scores",
    "best_setting", "paired_difference", "pareto_front",
    "Candidate", "Recommendation", "Verdict", "recommend",
]
