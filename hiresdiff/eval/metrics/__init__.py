"""Image-set metrics for judging generation above the trained resolution.

Images are float tensors ``(N, 3, H, W)`` in ``[-1, 1]`` (clamp model outputs first).

* :func:`sliced_wasserstein` — ProGAN's multi-scale sliced Wasserstein distance on
  Laplacian-pyramid patches (Karras et al. 2018). Needs no network.
* :func:`frechet_distance` / :func:`frechet_distance_from_stats` — the closed-form Fréchet
  distance between Gaussians fitted to two feature sets (Heusel et al. 2017: FID when the
  features are Inception's).
* :func:`kernel_inception_distance` — unbiased polynomial-kernel MMD² averaged over subsets
  (Bińkowski et al. 2018: KID when the features are Inception's).
* Feature spaces: :class:`RandomConvFeatures` (fixed random conv net, always available, no
  download) and :class:`InceptionFeatures` (the standard FID Inception-v3, loaded from a
  local weights file); :func:`fid` / :func:`kid` extract features and compare.
* :func:`paired_rmse` / :func:`median_paired_rmse` — cross-resolution consistency of pairs
  generated from the same noise: ``RMSE(D[high], low)``.
* :func:`detail_energy_ratio` — energy of the finest Laplacian band relative to real images:
  above 1 grainier, below 1 blurrier.
* :func:`crop_fd` / :func:`crop_swd` — detail at the native scale: the same distances on trained-size crops of
  high-resolution images (FreeScale's FID_c, LSRNA's pFID).
* :func:`semantic_agreement` — whether a high-resolution result still shows what its trained-size sample showed
  (a classifier of the emoji's Unicode subgroup); :func:`condition_agreement` against what was asked for.
* Clips (N, F, 3, H, W): :func:`frame_difference_energy` (how much moves), :func:`warping_error` (the change a
  block-matched translation does not explain: temporal consistency), :func:`flicker` (brightness jumps).
* :func:`bootstrap` — a percentile-bootstrap interval of any of them over images; :func:`tie` when two overlap.

No function here downloads anything.
"""

from hiresdiff.eval.metrics.consistency import median_paired_rmse, paired_rmse
from hiresdiff.eval.metrics.crops import crop_fd, crop_features, crop_swd, random_crops
from hiresdiff.eval.metrics.detail import detail_energies, detail_energy, detail_energy_ratio
from hiresdiff.eval.metrics.frechet import (
    KIDResult,
    fid,
    frechet_distance,
    frechet_distance_from_stats,
    frechet_distance_to,
    gaussian_stats,
    kernel_inception_distance,
    kid,
)
from hiresdiff.eval.metrics.inception import FIDInceptionV3, InceptionFeatures
from hiresdiff.eval.metrics.intervals import Interval, bootstrap, tie
from hiresdiff.eval.metrics.random_features import RandomConvFeatures
from hiresdiff.eval.metrics.semantic import (
    SemanticClassifier,
    condition_agreement,
    condition_matches,
    semantic_agreement,
    semantic_matches,
)
from hiresdiff.eval.metrics.swd import laplacian_pyramid, sliced_wasserstein
from hiresdiff.eval.metrics.temporal import flicker, frame_difference_energy, warping_error

__all__ = [
    "frame_difference_energy",
    "warping_error",
    "flicker",
    "sliced_wasserstein",
    "laplacian_pyramid",
    "gaussian_stats",
    "frechet_distance",
    "frechet_distance_from_stats",
    "frechet_distance_to",
    "KIDResult",
    "kernel_inception_distance",
    "RandomConvFeatures",
    "FIDInceptionV3",
    "InceptionFeatures",
    "fid",
    "kid",
    "paired_rmse",
    "median_paired_rmse",
    "detail_energy",
    "detail_energies",
    "detail_energy_ratio",
    "crop_fd",
    "crop_features",
    "crop_swd",
    "random_crops",
    "semantic_agreement",
    "semantic_matches",
    "condition_agreement",
    "condition_matches",
    "SemanticClassifier",
    "bootstrap",
    "Interval",
    "tie",
]
