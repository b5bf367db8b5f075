"""Resolution operators of Upsample Guidance
(paper §4.1, docs/architecture.md, "Consistent noise and Upsample Guidance").

``D`` (:func:`downsample`) averages non-overlapping blocks, ``U`` (:func:`upsample_nearest`)
repeats every sample over its block. Both act on the axes after (batch, channel): (H, W) for
images (B, C, H, W) and (F, H, W) for videos (B, C, F, H, W), with one integer factor per axis.
``D ∘ U`` is the identity and ``U ∘ D`` is the orthogonal projection onto block-constant signals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

from hiresdiff.checks import is_int

Factor = Union[int, Sequence[int]]


def axis_factors(factor: Factor, ndim: int) -> tuple[int, ...]:
    """Return one integer factor per axis after (batch, channel) of an ``ndim``-dimensional tensor.

    An int scales the two spatial axes (H, W) and leaves a video's frame axis alone; a tuple
    names the trailing axes it scales: (H, W), or (F, H, W) for a video.
    """
    if ndim not in (4, 5):
        raise ValueError(f"expected an image (B, C, H, W) or a video (B, C, F, H, W); got a tensor with {ndim} dims")
    if is_int(factor):
        factors: tuple = (factor, factor)
    elif isinstance(factor, (tuple, list)) and all(is_int(f) for f in factor):
        factors = tuple(factor)
    else:
        raise ValueError(f"factor must be a positive int or a tuple of positive ints; got {factor!r}")
    if any(f < 1 for f in factors):
        raise ValueError(f"factor must be >= 1 on every axis; got {factor!r}")
    n_axes = ndim - 2
    if len(factors) > n_axes:
        raise ValueError(f"factor {factor!r} names {len(factors)} axes but the tensor has only {n_axes} after (B, C)")
    return (1,) * (n_axes - len(factors)) + factors


def factor_product(factor: Factor, ndim: int) -> int:
    """k: the number of samples averaged into one by ``D`` (m² for an m× image, m³ for m× video in F, H, W)."""
    return math.prod(axis_factors(factor, ndim))


def check_divisible(shape: Sequence[int], factor: Factor, name: str = "size") -> tuple[int, ...]:
    """Raise ``ValueError`` naming ``name`` unless each axis after (B, C) is divisible by its factor."""
    factors = axis_factors(factor, len(shape))
    axes = tuple(shape[2:])
    if any(n % f for n, f in zip(axes, factors)):
        raise ValueError(f"{name} {axes} is not divisible by the factor {factors} on every axis")
    return factors


def downsample(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """``D``: the mean over blocks of ``factor`` samples on each axis after (B, C)."""
    factors = check_divisible(x.shape, factor, "input size")
    b, c, *axes = x.shape
    split: list[int] = [b, c]
    for n, f in zip(axes, factors):
        split += [n // f, f]
    block_dims = tuple(range(3, 2 + 2 * len(axes), 2))
    return x.reshape(split).mean(dim=block_dims)


def upsample_nearest(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """``U``: repeat every sample ``factor`` times on each axis after (B, C)."""
    factors = axis_factors(factor, x.ndim)
    for dim, f in enumerate(factors, start=2):
        if f > 1:
            x = x.repeat_interleave(f, dim=dim)
    return x
