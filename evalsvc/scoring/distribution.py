"""KID and FID between two sets of precomputed image features, computed through torchmetrics.

torchmetrics' `KernelInceptionDistance` and `FrechetInceptionDistance` accept any `nn.Module` as
`feature`; we pass `_Precomputed`, which returns its input, and feed the (N, D) feature matrices as
the "images". With a custom module torchmetrics skips its uint8/`normalize` handling, and the
`num_features` attribute spares FID its dummy forward pass; no Inception weights are touched.
Features go in as float64 (FID's covariance square root needs it; FID returns the input dtype).

KID: unbiased MMD² with the polynomial kernel (gamma x·y + coef)^degree, gamma = 1/D by default,
over `subsets` random subsets of `subset_size` rows of each set (drawn without replacement within a
subset), reported as the mean and the population std (ddof=0) over subsets. The draws come from
torch's CPU generator seeded with `seed` inside `torch.random.fork_rng`, so the caller's random
state is untouched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .similarity import as_matrix

VERSION = "1"
MAX_SUBSET_SIZE = 1000
FID_MIN_IMAGES = 2048  # below this FID is too biased to compare; use KID


@dataclass(frozen=True)
class DistributionResult:
    """A KID or FID value with what it was computed from (`std`, `subset_size`, `subsets` and `seed`
    are None for FID)."""

    metric: str
    value: float
    std: float | None
    n_real: int
    n_fake: int
    subset_size: int | None
    subsets: int | None
    seed: int | None
    feature_dim: int
    library_versions: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.metric not in ("kid", "fid"):
            raise ValueError(f"metric must be 'kid' or 'fid', got {self.metric!r}")
        if self.n_real < 2 or self.n_fake < 2 or self.feature_dim < 1:
            raise ValueError("a distribution metric needs at least 2 images per set and 1 feature")


def default_distribution_metric(n_images: int) -> str:
    """'kid' for fewer than 2048 images per set (FID is strongly biased there), else 'fid'."""
    if n_images < 2:
        raise ValueError(f"a distribution metric needs at least 2 images, got {n_images}")
    return "kid" if n_images < FID_MIN_IMAGES else "fid"


def default_subset_size(n_real: int, n_fake: int) -> int:
    """KID's default subset size: min(1000, n_real, n_fake)."""
    return min(MAX_SUBSET_SIZE, n_real, n_fake)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that compute KID and FID."""
    import torch
    import torchmetrics

    return {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__}


def _features(features_real, features_fake):
    """Both feature sets as float64 torch tensors of one width, at least 2 rows each."""
    import torch

    real, fake = as_matrix(features_real, "features_real"), as_matrix(features_fake, "features_fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"need at least 2 feature rows per set, got {len(real)} real and {len(fake)} fake")
    return torch.from_numpy(real), torch.from_numpy(fake)


def _precomputed(num_features: int):
    """A torchmetrics feature extractor for features that are already computed: the identity."""
    import torch

    class _Precomputed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.num_features = num_features

        def forward(self, x):
            return x

    return _Precomputed()


def kid(features_real, features_fake, subsets: int = 100, subset_size: int | None = None, degree: int = 3,
        gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets); `subset_size` defaults to
    min(1000, n_real, n_fake) and may not exceed either set."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _features(features_real, features_fake)
    if subset_size is None:
        subset_size = default_subset_size(len(real), len(fake))
    if not 2 <= subset_size <= min(len(real), len(fake)):
        raise ValueError(f"subset_size must lie in [2, {min(len(real), len(fake))}] "
                         f"(the smaller set), got {subset_size}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        metric = KernelInceptionDistance(feature=_precomputed(real.shape[1]), subsets=subsets,
                                         subset_size=subset_size, degree=degree,
                                         gamma=None if gamma is None else float(gamma), coef=float(coef))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def fid(features_real, features_fake) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (unbiased covariances); round-off
    below zero (identical sets) is returned as 0."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _features(features_real, features_fake)
    metric = FrechetInceptionDistance(feature=_precomputed(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)


def kid_result(features_real, features_fake, subsets: int = 100, subset_size: int | None = None,
               degree: int = 3, gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> DistributionResult:
    """`kid` with the settings and library versions it ran with."""
    real, fake = as_matrix(features_real, "features_real"), as_matrix(features_fake, "features_fake")
    size = default_subset_size(len(real), len(fake)) if subset_size is None else subset_size
    mean, std = kid(real, fake, subsets, size, degree, gamma, coef, seed)
    return DistributionResult("kid", mean, std, len(real), len(fake), size, subsets, seed, real.shape[1],
                              library_versions())


def fid_result(features_real, features_fake) -> DistributionResult:
    """`fid` with the set sizes and library versions it ran with."""
    real, fake = as_matrix(features_real, "features_real"), as_matrix(features_fake, "features_fake")
    return DistributionResult("fid", fid(real, fake), None, len(real), len(fake), None, None, None, real.shape[1],
                              library_versions())


DISTRIBUTION_METRICS = {"kid": kid_result, "fid": fid_result}
