"""Conversions between a model's prediction type and ε for the VP process x_t = √ᾱ x₀ + √(1-ᾱ) ε.

* ``epsilon``: ε itself.
* ``v_prediction``: v = √ᾱ ε − √(1-ᾱ) x₀, so ε = √ᾱ v + √(1-ᾱ) x_t (Salimans & Ho 2022).
* ``sample``: x₀, so ε = (x_t − √ᾱ x₀)/√(1-ᾱ).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")
    return prediction_type


def to_epsilon(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """ε from a prediction of type ``prediction_type`` made at noise level ``alpha_bar`` (broadcastable)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return pred
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":
        return a * pred + s * x_t
    return (x_t - a * pred) / s


def from_epsilon(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The prediction of type ``prediction_type`` that corresponds to ``eps`` (inverse of :func:`to_epsilon`)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":
        return (eps - s * x_t) / a
    return (x_t - s * eps) / a


def prediction_target(
    x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What a model of ``prediction_type`` should output for x_t = √ᾱ x₀ + √(1−ᾱ) ε: ε, v = √ᾱ ε − √(1−ᾱ) x₀,
    or x₀ (the training target, written from x₀ and ε rather than from x_t)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    return x0
