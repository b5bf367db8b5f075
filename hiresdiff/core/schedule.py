"""Noise-schedule math of Upsample Guidance
(paper §4.1, eq. 3; docs/architecture.md, "Consistent noise and Upsample Guidance").

A VP schedule is given as diffusers' discrete ``alphas_cumprod`` (ᾱ_t for t = 0 … T-1).
Real-valued times are read off it by linear interpolation in log-SNR, λ(t) = log(ᾱ_t / (1 - ᾱ_t)).
"""

from __future__ import annotations

import math
from typing import Union

import torch

TimeLike = Union[float, int, torch.Tensor]


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """λ = log SNR = log(ᾱ / (1 - ᾱ))."""
    return torch.log(alpha_bar) - torch.log1p(-alpha_bar)


def _schedule_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if ac.ndim != 1 or len(ac) < 2:
        raise ValueError(f"alphas_cumprod must be a 1-D schedule with at least 2 entries; got shape {tuple(ac.shape)}")
    if not torch.all((ac > 0) & (ac < 1)):
        raise ValueError("alphas_cumprod must lie strictly between 0 and 1")
    return log_snr(ac)


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: TimeLike) -> torch.Tensor:
    """ᾱ at real-valued time(s) ``t``, interpolating λ linearly between integer steps; t is clamped to [0, T-1]."""
    lam = _schedule_log_snr(alphas_cumprod)
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0, len(lam) - 1)
    lo = t.floor().long().clamp(max=len(lam) - 2)
    frac = t - lo
    lam_t = lam[lo] * (1 - frac) + lam[lo + 1] * frac
    return torch.sigmoid(lam_t)


def power(alpha_bar: torch.Tensor, k: float) -> torch.Tensor:
    """P = ᾱ + (1 - ᾱ)/k: the power of ``D[x_t]`` when ``D`` averages k samples (paper §4.1)."""
    return alpha_bar + (1 - alpha_bar) / k


def matched_alpha_bar(alpha_bar: torch.Tensor, k: float) -> torch.Tensor:
    """ᾱ(τ) = k·ᾱ_t / (1 + (k-1)·ᾱ_t), i.e. SNR(τ) = k·SNR(t): the noise level of ``D[x_t]/√P``."""
    return k * alpha_bar / (1 + (k - 1) * alpha_bar)


def matched_timestep(alphas_cumprod: torch.Tensor, t: TimeLike, k: float) -> torch.Tensor:
    """The real-valued time τ with SNR(τ) = k·SNR(t) on the schedule ``alphas_cumprod``.

    Solves λ(τ) = λ(t) + log k by inverting the piecewise-linear log-SNR curve (the paper's
    appendix picks the nearest integer instead); τ is clamped to [0, T-1] where the schedule ends.
    Works on a scalar or a tensor of times; returns float64 of the same shape.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    lam = _schedule_log_snr(alphas_cumprod)
    if not torch.all(lam[1:] < lam[:-1]):
        raise ValueError("alphas_cumprod must be strictly decreasing")
    target = log_snr(alpha_bar_at(alphas_cumprod, t)) + math.log(k)
    # -λ is increasing: find i with -λ[i-1] < -target <= -λ[i], then interpolate between i-1 and i.
    i = torch.searchsorted(-lam, -target.reshape(-1)).reshape(target.shape).clamp(1, len(lam) - 1)
    tau = (i - 1) + (lam[i - 1] - target) / (lam[i - 1] - lam[i])
    return tau.clamp(0, len(lam) - 1)
