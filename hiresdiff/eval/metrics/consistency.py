"""Cross-resolution consistency of pairs generated from the same noise: ``RMSE(D[high], low)``."""

from __future__ import annotations

import torch

from hiresdiff.core.resample import downsample
from hiresdiff.eval.metrics._checks import _check_images


def paired_rmse(high_res: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """Per-pair RMSE between ``D[high_res]`` and ``low_res``: tensor (N,).

    For samples generated from the same noise at two resolutions (the low-res noise being
    ``√k·D[high-res noise]``, docs/architecture.md, "Consistent noise and Upsample Guidance"), ``D`` (block mean,
    :func:`hiresdiff.core.resample.downsample`)
    of a faithful high-res sample should look like the low-res sample:

        rmse_i = sqrt( mean_{c,h,w} (D[high_i] − low_i)² )

    The block factor is ``H_high / H_low`` (and ``W_high / W_low``), which must be integers.
    """
    _check_images(high_res, "high_res")
    _check_images(low_res, "low_res")
    if high_res.shape[0] != low_res.shape[0]:
        raise ValueError(
            f"high_res and low_res must hold the same number of pairs; got {high_res.shape[0]} and {low_res.shape[0]}"
        )
    (hh, hw), (lh, lw) = high_res.shape[2:], low_res.shape[2:]
    if hh % lh or hw % lw:
        raise ValueError(f"high_res size {(hh, hw)} must be an integer multiple of low_res size {(lh, lw)}")
    down = downsample(high_res.float(), (hh // lh, hw // lw))
    return (down - low_res.float()).pow(2).mean(dim=(1, 2, 3)).sqrt()


def median_paired_rmse(high_res: torch.Tensor, low_res: torch.Tensor) -> float:
    """Median over pairs of :func:`paired_rmse` (robust to a few failed pairs)."""
    return float(torch.quantile(paired_rmse(high_res, low_res).double(), 0.5))
