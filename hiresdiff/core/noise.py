"""Resolution-consistent initial noise (DESIGN.md §2).

From one high-resolution Gaussian draw ``n``, ``√k·D[n]`` is standard normal on the low grid
(``D`` averages k independent unit-variance samples, so its variance is 1/k). Naive, guided and
trained-size runs can therefore start from the same noise.
"""

from __future__ import annotations

import math

import torch

from hiresdiff.core.resample import Factor, downsample, factor_product


def lowres_noise(noise: torch.Tensor, factor: Factor) -> torch.Tensor:
    """√k·D[noise]: the trained-resolution noise that corresponds to the high-resolution ``noise``."""
    return math.sqrt(factor_product(factor, noise.ndim)) * downsample(noise, factor)
