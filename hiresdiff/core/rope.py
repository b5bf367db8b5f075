"""Rotary position embeddings beyond the trained token grid: the standard rescalings, per axis.

A RoPE axis of (even) dimension d rotates feature pair i by the angle p·ω_i at position p, with
ω_i = θ^(−2i/d), i = 0 … d/2 − 1 (θ = 10⁴ for FLUX). At s times the trained length L:

* **position interpolation** (PI, Chen et al. 2023): ω_i / s — positions squeezed back into the trained
  range, the transformer analogue of dilating a convolution by s;
* **NTK-aware** base (bloc97 2023): θ′ = θ · s^(d/(d−2)) — the highest frequency (i = 0) is kept and the lowest
  (i = d/2 − 1) becomes exactly PI's;
* **YaRN** (Peng et al. 2023, "NTK-by-parts"): with the wavelength λ_i = 2π/ω_i and r_i = L/λ_i,
  ω′_i = (1 − γ_i)·ω_i/s + γ_i·ω_i, γ_i = clamp((r_i − α)/(β − α), 0, 1), α = 1, β = 32 — dimensions that turn
  fewer than α times over the trained length are interpolated, those turning more than β times are kept; and
  its attention temperature: q and k scaled by 0.1·ln s + 1 (:func:`yarn_attention_factor`).

Also the attention-entropy scaling of logits by log N / log N_train (N tokens attended over, Jin et al. 2023).
Every function is the identity (factor 1) at s = 1. DyPE's time-dependent schedule is not implemented
(patent-pending by its authors).
"""

from __future__ import annotations

import math

import torch

ROPE_SCALINGS = ("none", "pi", "ntk", "yarn")


def rope_frequencies(dim: int, theta: float = 10_000.0) -> torch.Tensor:
    """ω_i = θ^(−2i/d), i = 0 … d/2 − 1 (float64)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even number; got {dim!r}")
    return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def scaled_rope_frequencies(
    dim: int,
    scale: float,
    method: str,
    theta: float = 10_000.0,
    trained_length: float | None = None,
    alpha: float = 1.0,
    beta: float = 32.0,
) -> torch.Tensor:
    """The frequencies of one axis at ``scale`` × its trained length with ``method`` (one of :data:`ROPE_SCALINGS`);
    YaRN needs ``trained_length`` (positions along the axis at the trained size)."""
    if method not in ROPE_SCALINGS:
        raise ValueError(f"rope scaling must be one of {ROPE_SCALINGS}; got {method!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
        raise ValueError(f"rope scale must be a number >= 1; got {scale!r}")
    omega = rope_frequencies(dim, theta)
    if method == "none" or scale == 1:
        return omega
    if method == "pi":
        return omega / scale
    if method == "ntk":  # d = 2 has the one frequency ω_0 = θ^0 = 1, whatever the base: unchanged
        return omega if dim == 2 else rope_frequencies(dim, theta * scale ** (dim / (dim - 2)))
    if not trained_length or trained_length <= 0:
        raise ValueError(f"yarn needs the axis' trained_length (positions at the trained size); got {trained_length!r}")
    turns = trained_length * omega / (2 * math.pi)  # r_i = L / λ_i
    keep = ((turns - alpha) / (beta - alpha)).clamp(0, 1)  # γ_i
    return (1 - keep) * omega / scale + keep * omega


def yarn_attention_factor(scale: float) -> float:
    """YaRN's factor on q and k, 0.1·ln s + 1 (the logits grow by its square); 1 at s ≤ 1."""
    return 0.1 * math.log(scale) + 1 if scale > 1 else 1.0


def entropy_logit_scale(num_tokens: int, trained_tokens: int) -> float:
    """log N / log N_train: keeps the attention entropy of N tokens at its trained level; 1 at N ≤ N_train."""
    if trained_tokens < 2:
        raise ValueError(f"trained_tokens must be at least 2; got {trained_tokens!r}")
    return max(1.0, math.log(num_tokens) / math.log(trained_tokens))
