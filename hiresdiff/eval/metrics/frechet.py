"""Fréchet distance (FD/FID) and kernel inception distance (KID), on feature sets or on image sets."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from hiresdiff.eval.metrics._checks import ArrayLike, _as_float64, _check_features, _check_images, _check_int

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def gaussian_stats(feats: ArrayLike, name: str = "feats") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of a feature set (N, d), float64 tensors."""
    f = _check_features(feats, name)
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0.0).sqrt()) @ vecs.T


def frechet_distance_from_stats(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ1, Σ1) and N(μ2, Σ2) (Dowson & Landau 1982).

        FD = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)

    as in FID (Heusel et al. 2017). ``Tr (Σ1 Σ2)^½`` is computed as the sum of the square roots
    of the eigenvalues of the symmetric PSD matrix ``Σ1^½ Σ2 Σ1^½`` (same spectrum as Σ1 Σ2),
    with ``eigh`` and negative round-off eigenvalues clipped to 0: no complex ``sqrtm`` and no
    failure on singular covariances (fewer samples than dimensions). The result can be a
    round-off amount below 0 for identical statistics.
    """
    mu1, mu2 = (_as_float64(m, n).reshape(-1) for m, n in ((mu1, "mu1"), (mu2, "mu2")))
    s1, s2 = (_as_float64(s, n) for s, n in ((sigma1, "sigma1"), (sigma2, "sigma2")))
    d = mu1.shape[0]
    for name, v, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
        if tuple(v.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}; got {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0.0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_to(feats: ArrayLike, mu_ref: torch.Tensor, sigma_ref: torch.Tensor) -> float:
    """:func:`frechet_distance` of a feature set (N, d) to fixed reference statistics (μ_ref, Σ_ref), cheap enough to
    bootstrap: with C the centred features, Σ = CᵀC/(N−1), and the nonzero eigenvalues of Σ_ref^½ Σ Σ_ref^½ are those
    of the N×N matrix C Σ_ref Cᵀ/(N−1), so ``Tr (Σ Σ_ref)^½`` needs one small symmetric eigendecomposition."""
    f = _check_features(feats, "feats")
    mu_ref, sigma_ref = _as_float64(mu_ref, "mu_ref").reshape(-1), _as_float64(sigma_ref, "sigma_ref")
    if f.shape[1] != mu_ref.shape[0] or tuple(sigma_ref.shape) != (f.shape[1], f.shape[1]):
        raise ValueError(f"feats (N, {f.shape[1]}) and the reference statistics must have the same dimension")
    mu = f.mean(dim=0)
    centred = f - mu
    inner = centred @ sigma_ref @ centred.T / (f.shape[0] - 1)
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0.0).sqrt().sum()
    diff = mu - mu_ref
    trace = (centred**2).sum() / (f.shape[0] - 1)
    return float(diff @ diff + trace + torch.trace(sigma_ref) - 2.0 * tr_covmean)


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, d) and (N_b, d).

    ``FD = ||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½)`` (Heusel et al. 2017, "GANs trained by a two
    time-scale update rule…"; FID when the features are Inception pool3). μ is the sample mean,
    Σ the unbiased sample covariance. FD is biased upwards for finite N (Chong & Forsyth 2020):
    compare only values computed with the same N and feature space. See
    :func:`frechet_distance_from_stats` for the numerics.
    """
    fa = _check_features(feats_a, "feats_a")
    fb = _check_features(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same dimension; got {fa.shape[1]} and {fb.shape[1]}")
    return frechet_distance_from_stats(*gaussian_stats(fa, "feats_a"), *gaussian_stats(fb, "feats_b"))


class KIDResult(NamedTuple):
    """KID mean and standard deviation (ddof 0) over subsets."""

    mean: float
    std: float


def _poly_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD² with k(x, y) = (x·y/d + 1)³ (Gretton et al. 2012, eq. 3)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = x.shape[0], y.shape[0]
    sum_xx = kxx.sum() - torch.trace(kxx)
    sum_yy = kyy.sum() - torch.trace(kyy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * kxy.sum() / (m * n))


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> KIDResult:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

    The unbiased estimator of the squared MMD with the cubic polynomial kernel
    ``k(x, y) = (x·y / d + 1)³``,

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(a_i, a_j) + 1/(m(m−1)) Σ_{i≠j} k(b_i, b_j) − 2/m² Σ_{i,j} k(a_i, b_j),

    computed on ``num_subsets`` random subsets of ``m = min(subset_size, N_a, N_b)`` samples drawn
    without replacement from each set (as the reference ``polynomial_mmd_averages``, which
    also caps ``m`` at the set sizes). Returns :class:`KIDResult` ``(mean, std)`` over subsets.
    Being unbiased it is ≈ 0, and can be negative, for two samples of one distribution.

    Subset indices for each set come from a generator seeded with ``seed`` alone, so the result
    is deterministic and ``KID(a, b) == KID(b, a)`` up to round-off.
    """
    fa = _check_features(feats_a, "feats_a")
    fb = _check_features(feats_b, "feats_b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same dimension; got {fa.shape[1]} and {fb.shape[1]}")
    subset_size = _check_int(subset_size, "subset_size", 2)
    num_subsets = _check_int(num_subsets, "num_subsets", 1)
    m = min(subset_size, fa.shape[0], fb.shape[0])
    gen_a, gen_b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        xa = fa[torch.randperm(fa.shape[0], generator=gen_a)[:m]]
        xb = fb[torch.randperm(fb.shape[0], generator=gen_b)[:m]]
        mmds[i] = _poly_mmd2_unbiased(xa, xb)
    return KIDResult(float(mmds.mean()), float(mmds.std()))


def fid(images_a: torch.Tensor, images_b: torch.Tensor, features: FeatureFn) -> float:
    """Fréchet distance between two image sets in the feature space ``features``.

    ``features`` maps images (N, 3, H, W) in [-1, 1] to (N, d), e.g. :class:`InceptionFeatures`
    (then this is FID, Heusel et al. 2017) or :class:`RandomConvFeatures`.
    """
    _check_images(images_a, "images_a", min_count=2)
    _check_images(images_b, "images_b", min_count=2)
    return frechet_distance(features(images_a), features(images_b))


def kid(images_a: torch.Tensor, images_b: torch.Tensor, features: FeatureFn, **kwargs) -> KIDResult:
    """:func:`kernel_inception_distance` between two image sets in the feature space ``features``."""
    _check_images(images_a, "images_a", min_count=2)
    _check_images(images_b, "images_b", min_count=2)
    return kernel_inception_distance(features(images_a), features(images_b), **kwargs)
