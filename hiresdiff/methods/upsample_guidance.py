"""Upsample Guidance (Hwang, Park & Jo 2024), eq. 3–5, for any denoiser callable.

The guided noise prediction at the target resolution is (eq. 4)

    ε̃(x_t, t) = ε(x_t, t) + w_t · U[ ε(D[x_t]/√P, τ)/√k − D[ε(x_t, t)] ]

with ``D`` the block average over k samples, ``U`` nearest upsampling, ``P = ᾱ_t + (1-ᾱ_t)/k``
and τ the time with SNR(τ) = k·SNR(t). With k = m² the 1/√k is the paper's 1/m.
The schedule of eq. 5 is ``w_t = θ·H(t − (1−η)T)``, read on the step fraction p of the grid
(:mod:`hiresdiff.core.step_fraction`): w = θ while p < η, the first η of the steps (on the paper's uniform grid
the same steps). When ``w_t = 0`` the low-resolution pass is skipped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch

from hiresdiff.core.prediction import check_prediction_type, from_epsilon, to_epsilon
from hiresdiff.core.resample import Factor, axis_factors, downsample, upsample_nearest
from hiresdiff.core.schedule import TimeLike, alpha_bar_at, matched_timestep, power
from hiresdiff.core.step_fraction import Clock, continuous_clock, in_window

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WEIGHT_SCHEDULES = ("step", "linear", "constant")
PIXEL_ETA, LATENT_ETA = 1.0, 0.6  # the paper's η: pixel models guide every step, latent ones the first 60 %
#: flow models guide every step: on emoji-flux η 1 keeps more of the picture than 0.6, alone and in the cascades,
#: whose later stages restart at p = 0.7, after a 0.6 window (benchmarks/README.md, "UG's η on flow models")
FLOW_ETA = 1.0


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-batch value to x's rank, in x's dtype."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.ndim == 0:
        return value
    return value.reshape(-1, *([1] * (x.ndim - 1)))


def _batch_times(t: TimeLike, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def lowres_input(
    x: torch.Tensor,
    t: TimeLike,
    alphas_cumprod: torch.Tensor,
    factor: Factor,
    adjust_time: bool = True,
    adjust_power: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained-resolution model input ``D[x_t]/√P`` and its time τ (eq. 3).

    ``adjust_power=False`` returns ``D[x_t]``; ``adjust_time=False`` returns ``t`` (the paper's Fig. 8 ablations).
    """
    k = math.prod(axis_factors(factor, x.ndim))
    t = _batch_times(t, x)
    x_low = downsample(x, factor)
    if adjust_power:
        x_low = x_low / _per_sample(power(alpha_bar_at(alphas_cumprod, t.cpu()), k).sqrt(), x)
    tau = matched_timestep(alphas_cumprod, t.cpu(), k).to(x.device, torch.float32) if adjust_time else t
    return x_low, tau


def combine(eps_high: torch.Tensor, eps_low: torch.Tensor, factor: Factor, weight) -> torch.Tensor:
    """Eq. 4: ``ε_high + w·U[ε_low/√k − D[ε_high]]`` (``weight`` a scalar or one value per sample)."""
    k = math.prod(axis_factors(factor, eps_high.ndim))
    guidance = upsample_nearest(eps_low / math.sqrt(k) - downsample(eps_high, factor), factor)
    return eps_high + _per_sample(weight, eps_high) * guidance


def upsample_guidance(
    eps_fn: EpsFn,
    x: torch.Tensor,
    t: TimeLike,
    alphas_cumprod: torch.Tensor,
    factor: Factor = 2,
    weight=1.0,
    adjust_time: bool = True,
    adjust_power: bool = True,
    lowres_eps_fn: Optional[EpsFn] = None,
) -> torch.Tensor:
    """The guided ε of eq. 4 for any noise predictor ``eps_fn(x, t)``.

    Args:
        eps_fn: returns ε for a batch ``x`` (at the target or the trained resolution) at float times ``t`` (B,).
        x: the noisy sample x_t at the target resolution, (B, C, H, W) or (B, C, F, H, W).
        t: the current time (scalar or (B,)), an index into ``alphas_cumprod`` (may be fractional).
        alphas_cumprod: the model's training schedule ᾱ.
        factor: int m (H and W scaled by m, k = m²) or a tuple for the trailing axes ((H, W) or (F, H, W)).
        weight: w_t, scalar or (B,). 0 returns ``eps_fn(x, t)`` unchanged without the low-resolution pass.
        adjust_time / adjust_power: use τ and 1/√P (True) or t and 1 (ablations).
        lowres_eps_fn: the predictor of the low-resolution term ε(D[x_t]/√P, τ); default ``eps_fn``.
            A guided predictor here nests the guidance (see :func:`nested_guided_prediction`).
    """
    axis_factors(factor, x.ndim)
    t = _batch_times(t, x)
    eps_high = eps_fn(x, t)
    if not torch.any(torch.as_tensor(weight) != 0):
        return eps_high
    x_low, tau = lowres_input(x, t, alphas_cumprod, factor, adjust_time, adjust_power)
    return combine(eps_high, (lowres_eps_fn or eps_fn)(x_low, tau), factor, weight)


@dataclass
class UpsampleGuidanceConfig:
    """Settings of Upsample Guidance; validates itself.

    Attributes:
        factor: int m (H, W scaled by m) or a tuple per trailing axis: (m_h, m_w) or (m_f, m_h, m_w).
        theta: guidance scale θ (≥ 0).
        eta: share η ∈ [0, 1] of the steps, from the first, where guidance is on (step fraction p < η); ``None``:
            the model family's setting of the paper, :data:`PIXEL_ETA` for pixel models and :data:`LATENT_ETA`
            for latent ones (VAE artifacts), :data:`FLOW_ETA` for flow transformers (measured), filled in when UG is
            attached (:func:`with_family_eta`).
        schedule: ``"step"`` (eq. 5: θ while p < η), ``"linear"`` (θ at p = 0 falling linearly to 0 at p = η:
            θ·max(0, η − p)/η), ``"constant"`` (θ at every step) or a callable from step fractions p to w.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; ``None`` reads it from the scheduler.
        adjust_time / adjust_power: the two adjustments of eq. 3 (switch off only for ablations).
    """

    factor: Union[int, tuple] = 2
    theta: float = 1.0
    eta: Optional[float] = None
    schedule: Union[str, Callable] = "step"
    prediction_type: Optional[str] = None
    adjust_time: bool = True
    adjust_power: bool = True

    def __post_init__(self):
        if isinstance(self.factor, list):
            self.factor = tuple(self.factor)
        factors = axis_factors(self.factor, 5 if isinstance(self.factor, tuple) and len(self.factor) == 3 else 4)
        if math.prod(factors) < 2:
            raise ValueError(f"factor must scale at least one axis by >= 2; got {self.factor!r}")
        if not (isinstance(self.theta, (int, float)) and math.isfinite(self.theta) and self.theta >= 0):
            raise ValueError(f"theta must be a finite number >= 0; got {self.theta!r}")
        if self.eta is not None and not (isinstance(self.eta, (int, float)) and 0 <= self.eta <= 1):
            raise ValueError(f"eta must lie in [0, 1] or be None (the model family's default); got {self.eta!r}")
        if not callable(self.schedule) and self.schedule not in WEIGHT_SCHEDULES:
            raise ValueError(f"schedule must be one of {WEIGHT_SCHEDULES} or a callable p -> w; got {self.schedule!r}")
        if self.prediction_type is not None:
            check_prediction_type(self.prediction_type)

    def weight(self, progress) -> torch.Tensor:
        """w at step fraction(s) ``progress`` (:mod:`hiresdiff.core.step_fraction`), float32 of the same shape."""
        p = torch.as_tensor(progress, dtype=torch.float32)
        if callable(self.schedule):
            return torch.as_tensor(self.schedule(p), dtype=torch.float32).expand_as(p)
        if self.schedule == "constant":
            return torch.full_like(p, float(self.theta))
        if self.eta is None:
            raise ValueError("eta is None (the model family's default): attach UG to a UNet, or give eta a number")
        if self.schedule == "linear":
            if self.eta == 0:
                return torch.zeros_like(p)
            return self.theta * ((self.eta - p) / self.eta).clamp(0, 1)
        return self.theta * in_window(p, self.eta).float()


def family_eta(latent: bool, flow: bool = False) -> float:
    """A model family's η: :data:`FLOW_ETA` for flow transformers, else :data:`LATENT_ETA` or :data:`PIXEL_ETA`."""
    return FLOW_ETA if flow else LATENT_ETA if latent else PIXEL_ETA


def with_family_eta(config: UpsampleGuidanceConfig, latent: bool, flow: bool = False) -> UpsampleGuidanceConfig:
    """``config`` with η filled in for its model family when it is ``None`` (:func:`family_eta`)."""
    if config.eta is not None:
        return config
    return dataclasses.replace(config, eta=family_eta(latent, flow))


def guided_prediction(
    model_fn: EpsFn,
    x: torch.Tensor,
    t: TimeLike,
    alphas_cumprod: torch.Tensor,
    config: UpsampleGuidanceConfig,
    prediction_type: str = "epsilon",
    lowres_model_fn: Optional[EpsFn] = None,
    clock: Optional[Clock] = None,
) -> torch.Tensor:
    """Eq. 4 for a model whose native output is ``prediction_type``: convert to ε, guide, convert back.

    The low-resolution prediction (by ``lowres_model_fn``, default ``model_fn``) is converted with its
    own input and ᾱ(τ); the result with x and ᾱ(t). ``clock`` places t on the step fraction of the grid
    (default: the continuous one, p = 1 − t/T).
    """
    prediction_type = config.prediction_type or prediction_type
    check_prediction_type(prediction_type)

    def as_eps(fn):
        def eps_fn(x_in, t_in):
            alpha_bar = _per_sample(alpha_bar_at(alphas_cumprod, t_in.cpu()), x_in)
            return to_epsilon(fn(x_in, t_in), x_in, alpha_bar, prediction_type)

        return eps_fn

    t = _batch_times(t, x)
    clock = clock or continuous_clock(len(alphas_cumprod))
    weight = config.weight(clock(t.cpu())).to(x.device)
    if not torch.any(weight != 0):
        return model_fn(x, t)
    eps = upsample_guidance(
        as_eps(model_fn),
        x,
        t,
        alphas_cumprod,
        config.factor,
        weight,
        config.adjust_time,
        config.adjust_power,
        as_eps(lowres_model_fn or model_fn),
    )
    return from_epsilon(eps, x, _per_sample(alpha_bar_at(alphas_cumprod, t.cpu()), x), prediction_type)


def is_power_of_two(scale) -> bool:
    """Whether ``scale`` is an int 2, 4, 8, …: the scales that ×2 guidance can be nested for."""
    return isinstance(scale, int) and scale >= 2 and scale & (scale - 1) == 0


def nested_levels(scale: int, **config) -> list[UpsampleGuidanceConfig]:
    """The configs for ``scale``× (a power of two ≥ 2) as ×2 guidance nested log2(scale) times, outermost first."""
    if not is_power_of_two(scale):
        raise ValueError(f"scale must be a power of two >= 2 for nested x2 guidance; got {scale!r}")
    return [UpsampleGuidanceConfig(factor=2, **config) for _ in range(scale.bit_length() - 1)]


def levels_for_scale(
    config: UpsampleGuidanceConfig, scale: Sequence[float], nested: bool = True
) -> list[UpsampleGuidanceConfig]:
    """UG toward the trained size for a stage of ``scale`` = (s_h, s_w) times the trained size, outermost first.

    Scale 1 needs no guidance ([]). A square power-of-two scale with ``nested`` is ×2 guidance nested
    log2(s) times; any other integer scale is one level of factor (s_h, s_w). ``config.factor`` is
    replaced by these, except its frame factor: a video config of factor (m_f, ·, ·) with m_f > 1 keeps
    m_f in one level (m_f, s_h, s_w), also at spatial scale 1 (temporal UG: more frames than trained).
    ``ValueError`` naming ``ug`` for a non-integer scale.
    """
    s_h, s_w = (float(s) for s in scale)
    frames = config.factor[0] if isinstance(config.factor, tuple) and len(config.factor) == 3 else 1
    if (s_h, s_w) == (1.0, 1.0):
        return [dataclasses.replace(config, factor=(frames, 1, 1))] if frames > 1 else []
    if not (s_h.is_integer() and s_w.is_integer()):
        raise ValueError(
            f"ug needs integer scales relative to the trained size; a stage is {s_h:g}x{s_w:g} "
            "(choose a target that is an integer multiple of the trained size)"
        )
    m_h, m_w = int(s_h), int(s_w)
    if frames > 1:
        return [dataclasses.replace(config, factor=(frames, m_h, m_w))]
    if nested and m_h == m_w and is_power_of_two(m_h):
        return [dataclasses.replace(config, factor=2) for _ in range(m_h.bit_length() - 1)]
    return [dataclasses.replace(config, factor=(m_h, m_w))]


def nested_guided_prediction(
    model_fn: EpsFn,
    x: torch.Tensor,
    t: TimeLike,
    alphas_cumprod: torch.Tensor,
    configs: Sequence[UpsampleGuidanceConfig],
    prediction_type: str = "epsilon",
    clock: Optional[Clock] = None,
) -> torch.Tensor:
    """UG applied level by level: the low-resolution branch of ``configs[0]`` is itself guided by ``configs[1]``, …

    For 4× as ×2 twice, ``configs = [c, c]`` with ``c.factor = 2``:

        ε̃₄(x_t, t) = ε(x_t, t) + w_t · U[ ε̃₂(D[x_t]/√P, τ)/2 − D[ε(x_t, t)] ],

    where ε̃₂ is eq. 4 at 2× (its own low branch at the trained size, at the time τ' matched to τ, so
    that SNR(τ') = 16·SNR(t) as for k = 16 directly). Each level costs one extra UNet call at its size
    when its weight is non-zero; each level's weight is read at its own time on ``clock`` (the inner level at τ, a
    later step fraction than t's). One config is :func:`guided_prediction`; none is ``model_fn``.
    """
    if not configs:
        return model_fn(x, t)

    def lowres_model_fn(x_low, t_low):
        return nested_guided_prediction(model_fn, x_low, t_low, alphas_cumprod, configs[1:], prediction_type, clock)

    return guided_prediction(model_fn, x, t, alphas_cumprod, configs[0], prediction_type, lowres_model_fn, clock)
