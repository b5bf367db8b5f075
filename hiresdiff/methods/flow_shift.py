"""The shift of a flow model's σ grid at a size it was not trained at: the policy behind ``shift=`` / ``--shift``.

A flow-matching scheduler samples σ on a uniform grid u (1 down to 1/N) shifted by s,

    σ = s·u / (1 + (s − 1)·u),

(SD3's static ``shift``; FLUX's exponential time shift with μ is the same map with s = e^μ). Shifts compose by
multiplication (the map multiplies the odds σ/(1 − σ) by s). FLUX's pipeline picks μ linearly in the image token
count n between (256, 0.5) and (4096, 1.15) and extrapolates beyond: at 2048² μ ≈ 3.2 (s ≈ 25), at 4096² μ ≈ 11.6,
where nearly every step sits at σ ≈ 1 and the run is degenerate. The policies, for a stage of n tokens whose
model was trained at n₀:

* ``"trained"``: the trained size's shift, s(n₀) — the grid every stage of a cascade has at the trained size;
* ``"pipeline"``: what the pipeline itself does at n (FLUX: extrapolated; SD3.5: its static shift);
* ``"resolution"``: SD3's rule (Esser et al. 2024, §5.3.2), s(n₀)·√(n/n₀) — the shift that keeps the
  signal-to-noise ratio of a pixel's neighbourhood when the pixel count grows by n/n₀;
* a number s > 0: that fixed shift (I-Max: 3, then 6; URAE: 10; UltraFlux: 4).

The values are in the scheduler's own convention (:func:`policy_value`): μ for an exponential time shift (so a
shift s is μ = log s, and √(n/n₀) adds ½·log(n/n₀)), s itself for a linear or a static one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch

from hiresdiff.checks import check_shift

#: the policy of ``shift=None``, for every method and stage (measured on emoji-flux: benchmarks/README.md, "The shift
#: policy on emoji-flux")
DEFAULT_SHIFT = "trained"
Shift = Union[str, float]
DEGENERATE_SIGMA, DEGENERATE_SHARE = 0.95, 0.5  # a grid with more than half of its steps above σ 0.95 is degenerate


def policy_value(
    shift: Shift, tokens: int, trained_tokens: int, own: Callable[[int], float], exponential: bool
) -> float:
    """The grid's shift for a stage of ``tokens`` image tokens under ``shift``, in the scheduler's convention: μ when
    ``exponential``, else the shift s. ``own(n)`` is the scheduler's own value at n tokens (the pipeline's μ, or a
    static shift)."""
    check_shift(shift)
    if shift == "pipeline":
        return own(tokens)
    if shift == "trained":
        return own(trained_tokens)
    if shift == "resolution":
        ratio = tokens / trained_tokens
        return own(trained_tokens) + 0.5 * math.log(ratio) if exponential else own(trained_tokens) * math.sqrt(ratio)
    return math.log(shift) if exponential else float(shift)


def shifted(u, shift: float) -> torch.Tensor:
    """σ = s·u / (1 + (s − 1)·u): the uniform grid ``u`` shifted by s."""
    u = torch.as_tensor(u, dtype=torch.float64)
    return shift * u / (1 + (shift - 1) * u)


def degenerate_steps(sigmas) -> int:
    """How many of a grid's steps start above σ = 0.95 (``sigmas`` per step, without the terminal 0)."""
    return int((torch.as_tensor(sigmas, dtype=torch.float64) > DEGENERATE_SIGMA).sum())


def is_degenerate(sigmas) -> bool:
    """More than half of the steps after the first above σ = 0.95: the run spends most of its steps on pure noise.
    (The first step of a fresh grid starts at σ = 1 whatever the shift, so a one-step grid is never degenerate.)"""
    return degenerate_steps(sigmas[1:]) > DEGENERATE_SHARE * (len(sigmas) - 1)
