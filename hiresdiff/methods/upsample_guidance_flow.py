"""Upsample Guidance for rectified flow (FLUX.1, SD3): Hwang, Park & Jo's eq. 3–4 re-derived for
x_t = (1 − t)·x₀ + t·ε, t ∈ [0, 1] (t = 1 pure noise), a model that predicts the velocity v = ε − x₀.

**Input (eq. 3).** ``D`` averages k samples (k = the product of the per-axis factors: m² for m×m pixels,
m_f·m_h·m_w for videos). The average of k independent unit normals is ε′/√k with ε′ a unit normal, so

    D[x_t] = (1 − t)·D[x₀] + (t/√k)·ε′.

Scaled by c it is a clean rectified-flow sample of D[x₀] at time τ when c(1 − t) = 1 − τ and c·t/√k = τ:

    τ = t / (t + √k(1 − t)),        c = √k / (t + √k(1 − t)) = 1 / (1 − t + t/√k).

For m×m pixels √k = m: τ = t / (t + m(1 − t)) and c = 1 / (1 − t + t/m) (SD3's resolution shift with shift 1/m);
for videos and per-axis factors √k = √(m_f·m_h·m_w) (``ablation``: t and c = 1 instead).

**Guided velocity (eq. 4).** Eq. 4 acts on the noise estimate; with x_t fixed the estimates are
ε̂ = x_t + (1 − t)·v at the target and ε̂′ = c·D[x_t] + (1 − τ)·v′ at the trained size (v′ the model's velocity
there), and ε̃ = ε̂ + w·U[ε̂′/√k − D[ε̂]]. Back to a velocity, ṽ = (ε̃ − x_t)/(1 − t); substituting τ and c the
1/(1 − t) cancels (no singularity at t = 1):

    ṽ = v + w · U[ (v′ − (√k − 1)·D[x_t]) / (t + √k(1 − t)) − D[v] ].

The bracket vanishes exactly when the two predictions agree (an exact model of consistent data at both
sizes), and at w = 1 the clean estimate x̂₀ = x_t − t·ṽ has the low frequencies D[x̂₀] of the trained-size
model's own x̂₀′ = c·D[x_t] − τ·v′: the same replacement as eq. 4 on ε or on x₀.
The weight w_t follows eq. 5 on the step fraction p of the grid (:mod:`hiresdiff.core.step_fraction`): θ while
p < η. Not θ·H(t − (1 − η)) in flow time: a resolution-shifted grid (FLUX at 4×) has nearly every σ above 0.7,
so every η would guide every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional

import torch

from hiresdiff.core.resample import Factor, axis_factors, downsample, upsample_nearest
from hiresdiff.core.step_fraction import Clock, continuous_clock

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]).reshape(-1, *[1] * (x.ndim - 1)) if t.ndim == 0 else t.reshape(-1, *[1] * (x.ndim - 1))


def matched_flow_time(t, k: float) -> torch.Tensor:
    """τ = t / (t + √k(1 − t)): the time at which c·D[x_t] has the noise level of a trained-size sample."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return t / (t + math.sqrt(k) * (1 - t))


def flow_input_scale(t, k: float) -> torch.Tensor:
    """c = 1 / (1 − t + t/√k)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return 1 / (1 - t + t / math.sqrt(k))


def flow_lowres_input(x: torch.Tensor, t, factor: Factor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained-size model's input ``c·D[x_t]`` and its time τ (per sample, float32)."""
    k = math.prod(axis_factors(factor, x.ndim))
    t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
    c = _per_sample(flow_input_scale(t, k).to(x.dtype), x)
    return c * downsample(x, factor), matched_flow_time(t, k).float().to(x.device)


def flow_combine(v_high: torch.Tensor, v_low: torch.Tensor, x: torch.Tensor, t, factor: Factor, weight) -> torch.Tensor:
    """ṽ = v + w·U[(v′ − (√k − 1)·D[x_t]) / (t + √k(1 − t)) − D[v]] (the module's derivation)."""
    root_k = math.sqrt(math.prod(axis_factors(factor, x.ndim)))
    t = _per_sample(torch.as_tensor(t, dtype=torch.float64).to(x.dtype), x)
    guidance = (v_low - (root_k - 1) * downsample(x, factor)) / (t + root_k * (1 - t)) - downsample(v_high, factor)
    return v_high + _per_sample(torch.as_tensor(weight, dtype=x.dtype), x) * upsample_nearest(guidance, factor)


def flow_upsample_guidance(
    v_fn: VelocityFn, x: torch.Tensor, t, factor: Factor = 2, weight=1.0, lowres_v_fn: Optional[VelocityFn] = None
) -> torch.Tensor:
    """The guided velocity for any velocity predictor ``v_fn(x, t)`` (t per sample in [0, 1]); ``weight`` 0
    returns ``v_fn(x, t)`` without the trained-size pass. ``lowres_v_fn`` (default ``v_fn``) answers at the
    trained size."""
    axis_factors(factor, x.ndim)
    t = torch.as_tensor(t, dtype=torch.float32).expand(x.shape[0]).to(x.device)
    v_high = v_fn(x, t)
    if not torch.any(torch.as_tensor(weight) != 0):
        return v_high
    x_low, tau = flow_lowres_input(x, t, factor)
    return flow_combine(v_high, (lowres_v_fn or v_fn)(x_low, tau), x, t, factor, weight)


def nested_flow_upsample_guidance(
    v_fn: VelocityFn, x: torch.Tensor, t, configs: Sequence, clock: Optional[Clock] = None
) -> torch.Tensor:
    """UG-RF level by level, as :func:`hiresdiff.methods.upsample_guidance.nested_guided_prediction`: the trained-size
    branch of ``configs[0]`` (an ``UpsampleGuidanceConfig``: ``factor``, w = ``weight(p)`` at the step fraction
    p = ``clock(t)``, default the continuous 1 − t) is itself guided by ``configs[1]``, …; none is ``v_fn``. For 4×
    as ×2 twice the inner level runs at τ(t, 4) and its own trained-size call at τ(τ, 4) = τ(t, 16), as for k = 16
    directly."""
    t = torch.as_tensor(t, dtype=torch.float32).expand(x.shape[0]).to(x.device)
    if not configs:
        return v_fn(x, t)
    clock = clock or continuous_clock(1.0)

    def lowres_v_fn(x_low, t_low):
        return nested_flow_upsample_guidance(v_fn, x_low, t_low, configs[1:], clock)

    weight = configs[0].weight(clock(t.cpu())).to(x.device)
    return flow_upsample_guidance(v_fn, x, t, configs[0].factor, weight, lowres_v_fn)
