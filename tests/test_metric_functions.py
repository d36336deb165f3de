"""Metric functions (overcook, KID/FID, similarities, SSIM) against independent computations."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from evalsvc.scoring.distribution import (DistributionResult, default_distribution_metric, fid, fid_result, kid,
                                          kid_result)
from evalsvc.scoring.overcook import OvercookStats, overcook_score, overcook_stats
from evalsvc.scoring.similarity import (clip_score, clip_score_scaled, diversity, embedding_distance,
                                        mean_similarity_to_set, nearest_similarity, ssim)


def _images(seed: int, shape=(4, 9, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- overcook -------------------------------------------------------------------------------------


def _direct_stats(image: np.ndarray, cutoff: float = 0.25) -> tuple[float, float, float, float]:
    """The four statistics of one uint8 HWC image, pixel by pixel and with an explicit DFT."""
    h, w, _ = image.shape
    sats, clips, lumas = [], [], []
    for r, g, b in image.reshape(-1, 3).tolist():
        sats.append(colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[1])
        clips.append(any(v <= 1 or v >= 254 for v in (r, g, b)))
        lumas.append(0.299 * r / 255 + 0.587 * g / 255 + 0.114 * b / 255)
    y = np.array(lumas).reshape(h, w)
    y = y - y.mean()
    dft_h = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    dft_w = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    power = np.abs(dft_h @ y @ dft_w.T) ** 2
    high = 0.0
    for ky, kx in itertools.product(range(h), range(w)):
        if np.hypot(min(ky, h - ky) / h, min(kx, w - kx) / w) > cutoff:
            high += power[ky, kx]
    return float(np.mean(sats)), float(np.mean(clips)), float(np.std(lumas)), high / power.sum()


def test_overcook_stats_match_direct_computation():
    images = _images(0)
    images[0, :3, :3] = [0, 128, 200]  # some clipped pixels beside the random ones
    images[1, 2:5, 4:6] = [254, 30, 30]
    images[2, 5:, :] = [1, 1, 1]
    stats = overcook_stats(images)
    expected = np.array([_direct_stats(image) for image in images])
    np.testing.assert_allclose(stats.as_matrix(), expected, rtol=1e-10, atol=1e-12)
    # float input in [0, 1] and torch input give the same numbers
    np.testing.assert_allclose(overcook_stats(images / 255.0).as_matrix(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(overcook_stats(torch.from_numpy(images)).as_matrix(), expected, rtol=1e-10,
                               atol=1e-12)


def test_overcook_hand_made_cases():
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 200
    gray = np.full((1, 8, 8, 3), 128, np.uint8)
    checker = ((np.indices((8, 8)).sum(axis=0) % 2) * 255).astype(np.uint8)
    checker = np.repeat(checker[None, :, :, None], 3, axis=3)
    halves = np.zeros((1, 8, 8, 3), np.uint8)
    halves[:, :, 4:] = 255
    stats = overcook_stats(np.concatenate([red, gray, checker, halves]))
    np.testing.assert_allclose(stats.saturation, [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(stats.clipped, [1, 0, 1, 1], atol=1e-12)  # red's G and B are 0
    np.testing.assert_allclose(stats.contrast, [0, 0, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(stats.high_frequency[:3], [0, 0, 1], atol=1e-12)
    assert 0 < stats.high_frequency[3] < 0.2  # one edge: mostly low frequencies


def test_overcook_score_is_higher_for_contrast_stretched_images():
    rng = np.random.default_rng(1)
    # smooth, muted reference images: a colour gradient plus mild noise
    ramp = np.linspace(0.3, 0.7, 16)
    base = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1)[None] * rng.uniform(0.8, 1.1, (12, 1, 1, 3))
    reference = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
    fried = np.clip((reference - 0.5) * 3 + 0.5, 0, 1)  # contrast stretched, clipped at 0 and 1
    ref_stats, fried_stats = overcook_stats(reference), overcook_stats(fried)
    scores, ref_scores = overcook_score(fried_stats, ref_stats), overcook_score(ref_stats, ref_stats)
    assert (scores > ref_scores.max()).all()
    assert abs(ref_scores.mean()) < 1e-12  # z-scores of the reference against itself average to 0
    # the score is the mean z-score, spread floored at 0.01 (here: the reference has no clipped pixels)
    ref, x = ref_stats.as_matrix(), fried_stats.as_matrix()
    assert ref[:, 1].std() == 0
    z = [[(x[i, j] - ref[:, j].mean()) / max(ref[:, j].std(), 0.01) for j in range(4)] for i in range(len(x))]
    np.testing.assert_allclose(scores, np.mean(z, axis=1), rtol=1e-12)
    # without a reference: the mean of the raw statistics
    np.testing.assert_allclose(overcook_score(fried_stats), x.mean(axis=1), rtol=1e-12)


def test_overcook_score_takes_the_mean_from_the_reference_and_the_spread_from_spread():
    rng = np.random.default_rng(2)
    same_prompt = overcook_stats(rng.uniform(0.2, 0.6, (1, 8, 8, 3)))  # one base image of this prompt
    every_base = overcook_stats(rng.uniform(0.0, 1.0, (9, 8, 8, 3)))
    images = overcook_stats(rng.uniform(0.0, 1.0, (4, 8, 8, 3)))
    scores = overcook_score(images, same_prompt, spread=every_base)
    mean, std = same_prompt.as_matrix().mean(axis=0), np.maximum(every_base.as_matrix().std(axis=0), 0.01)
    np.testing.assert_allclose(scores, ((images.as_matrix() - mean) / std).mean(axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        overcook_score(images, same_prompt)  # one image has no spread of its own


@pytest.mark.parametrize("bad", [np.full((2, 4, 4, 3), 1.5), np.zeros((4, 4, 3)), np.zeros((2, 4, 4, 4)),
                                 np.zeros((2, 4, 4, 3), np.int64)])
def test_overcook_refuses_bad_images(bad):
    with pytest.raises(ValueError):
        overcook_stats(bad)


def test_overcook_refuses_bad_reference_and_stats():
    stats = overcook_stats(_images(2))
    with pytest.raises(ValueError):
        overcook_score(stats, overcook_stats(_images(3, (1, 8, 8, 3))))
    with pytest.raises(ValueError):
        OvercookStats(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(3))


# --- KID / FID ------------------------------------------------------------------------------------


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree=3, gamma=None, coef=1.0) -> float:
    """Unbiased MMD² with the polynomial kernel, as sums over index pairs."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    m = len(x)

    def k(a, b):
        return (gamma * float(a @ b) + coef) ** degree

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


@pytest.mark.parametrize("degree, gamma, coef", [(3, None, 1.0), (2, 0.3, 0.5)])
def test_kid_with_one_full_subset_matches_direct_mmd(degree, gamma, coef):
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 5)), rng.normal(0.4, 1.2, size=(30, 5))
    mean, std = kid(real, fake, subsets=1, subset_size=30, degree=degree, gamma=gamma, coef=coef)
    assert mean == pytest.approx(_mmd2_unbiased(real, fake, degree, gamma, coef), rel=1e-10)
    assert std == 0.0


def test_kid_subsets_are_seeded_and_match_direct_mmd_on_the_same_subsets():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(25, 4)), rng.normal(0.3, 1.0, size=(20, 4))
    state = torch.get_rng_state()
    mean, std = kid(torch.from_numpy(real).float(), fake, subsets=5, subset_size=10, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    # the same draws as torchmetrics makes: per subset, a permutation of real rows, then of fake rows
    generator = torch.Generator().manual_seed(7)
    values = []
    for _ in range(5):
        r = torch.randperm(25, generator=generator)[:10].numpy()
        f = torch.randperm(20, generator=generator)[:10].numpy()
        values.append(_mmd2_unbiased(real.astype(np.float32).astype(np.float64)[r], fake[f]))
    assert mean == pytest.approx(np.mean(values), rel=1e-9)
    assert std == pytest.approx(np.std(values), rel=1e-9)
    assert kid(real, fake, subsets=5, subset_size=10, seed=7)[0] != kid(real, fake, subsets=5, subset_size=10,
                                                                          seed=8)[0]


def test_kid_subset_size_default_and_limits():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(12, 3)), rng.normal(size=(9, 3))
    result = kid_result(real, fake, subsets=3)
    assert (result.subset_size, result.n_real, result.n_fake, result.feature_dim) == (9, 12, 9, 3)
    assert result.value == pytest.approx(kid(real, fake, subsets=3, subset_size=9)[0], rel=1e-12)
    assert kid(real, fake, subsets=3) == kid(real, fake, subsets=3, subset_size=9)
    assert kid(real, fake, subsets=3) != kid(real, fake, subsets=3, subset_size=8)
    with pytest.raises(ValueError):
        kid(real, fake, subset_size=10)
    with pytest.raises(ValueError):
        kid(real, rng.normal(size=(9, 4)))


def _fid_closed_form(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_closed_form_and_is_zero_for_one_set():
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(6, 6))
    real = rng.normal(size=(200, 6)) @ mixing
    fake = rng.normal(0.5, 1.0, size=(150, 6)) @ mixing.T
    assert fid(real, fake) == pytest.approx(_fid_closed_form(real, fake), rel=1e-8)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-8)


def _with_moments(rng, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and (ddof=1) covariance are exactly `mean` and `cov`."""
    x = rng.normal(size=(n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(cov).T + mean


def test_fid_of_two_gaussians_is_the_analytic_value():
    rng = np.random.default_rng(4)
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 1.0, 0.5])
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 1.0, 0.0, 0.0])
    real = _with_moments(rng, 300, mu1, rotation @ np.diag(var1) @ rotation.T)
    fake = _with_moments(rng, 200, mu2, rotation @ np.diag(var2) @ rotation.T)
    # commuting covariances: |mu1 - mu2|^2 + sum (sigma1_i - sigma2_i)^2
    analytic = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert fid(real, fake) == pytest.approx(analytic, rel=1e-8)


def test_distribution_result_metadata():
    import torchmetrics

    rng = np.random.default_rng(5)
    result = fid_result(rng.normal(size=(10, 3)), rng.normal(size=(8, 3)))
    assert isinstance(result, DistributionResult)
    assert (result.metric, result.n_real, result.n_fake, result.feature_dim, result.std) == ("fid", 10, 8, 3, None)
    assert result.library_versions == {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__}
    assert default_distribution_metric(2047) == "kid" and default_distribution_metric(2048) == "fid"
    with pytest.raises(ValueError):
        fid(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)))


# --- similarities ---------------------------------------------------------------------------------


def _cos(a, b) -> float:
    return float(np.dot(a, b) / (np.sqrt(np.dot(a, a)) * np.sqrt(np.dot(b, b))))


def test_clip_score_and_embedding_distance_match_loops():
    rng = np.random.default_rng(6)
    images, texts = rng.normal(size=(7, 5)) * 3, rng.normal(size=(7, 5))  # not normalised
    expected = [_cos(images[i], texts[i]) for i in range(7)]
    np.testing.assert_allclose(clip_score(images, torch.from_numpy(texts)), expected, rtol=1e-12)
    np.testing.assert_allclose(clip_score_scaled(images, texts), [max(100 * c, 0) for c in expected], rtol=1e-12)
    np.testing.assert_allclose(embedding_distance(images, texts), [1 - c for c in expected], rtol=1e-12)
    with pytest.raises(ValueError):
        clip_score(images, texts[:6])
    with pytest.raises(ValueError):
        clip_score(np.zeros((1, 5)), texts[:1])


def test_set_and_nearest_similarity_match_loops():
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(9, 6))
    images = rng.normal(size=(4, 6))
    images[2] = reference[5] * 2 + rng.normal(0, 0.01, 6)  # a near copy of reference image 5
    table = [[_cos(x, r) for r in reference] for x in images]
    np.testing.assert_allclose(mean_similarity_to_set(images, reference), np.mean(table, axis=1), rtol=1e-12)
    best, index = nearest_similarity(images, reference)
    np.testing.assert_allclose(best, np.max(table, axis=1), rtol=1e-12)
    assert index.tolist() == [int(np.argmax(row)) for row in table] and index[2] == 5
    assert best[2] > 0.999


def test_diversity_matches_pairwise_loop():
    embs = np.random.default_rng(8).normal(size=(6, 4))
    expected = np.mean([1 - _cos(a, b) for a, b in itertools.combinations(embs, 2)])
    assert diversity(embs) == pytest.approx(expected, rel=1e-12)
    assert diversity(np.tile(embs[:1], (3, 1))) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        diversity(embs[:1])


def _ssim_direct(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [0, 1] HWC images: 11-tap gaussian (sigma 1.5), reflect padding, mean of the map."""
    taps = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    taps /= taps.sum()

    def blur(x):
        x = np.pad(x, 5, mode="reflect")
        x = np.apply_along_axis(lambda row: np.convolve(row, taps, mode="valid"), 0, x)
        return np.apply_along_axis(lambda col: np.convolve(col, taps, mode="valid"), 1, x)

    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(maps))


def test_ssim_matches_direct_gaussian_window_and_is_one_for_same_image():
    a = _images(9, (3, 16, 20, 3))
    noise = np.random.default_rng(10).normal(0, 40, a.shape)
    b = np.clip(a + noise, 0, 255).astype(np.uint8)
    values = ssim(a, b)
    expected = [_ssim_direct(a[i] / 255.0, b[i] / 255.0) for i in range(3)]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)  # computed in float32
    assert 0.1 < values.min() and values.max() < 0.95
    np.testing.assert_allclose(ssim(a, torch.from_numpy(a)), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        ssim(a, b[:2])
