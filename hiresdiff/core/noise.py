"""Initial noise: resolution-consistent (docs/architecture.md, "Consistent noise and Upsample Guidance") and shared
across a clip's frames.

From one high-resolution Gaussian draw ``n``, ``√k·D[n]`` is standard normal on the low grid
(``D`` averages k independent unit-variance samples, so its variance is 1/k). Naive, guided and
trained-size runs can therefore start from the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch

from hiresdiff.core.resample import Factor, downsample, factor_product


def lowres_noise(noise: torch.Tensor, factor: Factor) -> torch.Tensor:
    """√k·D[noise]: the trained-resolution noise that corresponds to the high-resolution ``noise``."""
    return math.sqrt(factor_product(factor, noise.ndim)) * downsample(noise, factor)


def consistent_noise(
    generator: torch.Generator, shape: Sequence[int], noise_size: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """The next standard normal draw of ``generator`` (on its device) made at ``noise_size`` and reduced to
    ``shape`` (B, C, H, W); without ``noise_size`` a plain draw of ``shape``."""
    *lead, height, width = shape
    big_h, big_w = noise_size or (height, width)
    if big_h % height or big_w % width:
        raise ValueError(f"noise_size {tuple(noise_size)} must be an integer multiple of {(height, width)}")
    draw = torch.randn((*lead, big_h, big_w), generator=generator, device=generator.device)
    return draw if (big_h, big_w) == (height, width) else lowres_noise(draw, (big_h // height, big_w // width))


def frame_shared_noise(noise: torch.Tensor, share: float, frame_dim: int = 2) -> torch.Tensor:
    """PYoCo's mixed noise prior (Ge et al. 2023, §3.2): standard normal on every frame, correlation ``share`` (s)
    between any two frames, made from the independent frames of ``noise`` along ``frame_dim`` (F of them).

    With m the frames' mean, √F·m is standard normal and independent of the deviations ε_f − m, so
    ``a·√F·m + √(1 − s)·(ε_f − m)`` with a² = s + (1 − s)/F has unit variance and covariance a² − (1 − s)/F = s:
    the distribution of √s·ε_shared + √(1 − s)·ε_f, and ``noise`` itself at s = 0."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1]; got {share!r}")
    if share == 0:
        return noise  # the formula's value, without its rounding
    frames = noise.shape[frame_dim]
    mean = noise.mean(frame_dim, keepdim=True)
    shared = math.sqrt((share + (1 - share) / frames) * frames)
    return shared * mean + math.sqrt(1 - share) * (noise - mean)
