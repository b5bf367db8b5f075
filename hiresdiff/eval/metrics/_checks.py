"""Input validation shared by the metrics: image sets, feature sets and integer arguments."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from hiresdiff.checks import check_int

ArrayLike = Union[torch.Tensor, np.ndarray]

# Values may exceed [-1, 1] by float rounding only.
_RANGE_TOL = 1e-4


def _check_images(x: torch.Tensor, name: str, *, min_count: int = 1) -> None:
    """Raise unless ``x`` is a finite float tensor (N, 3, H, W) in [-1, 1] with N >= min_count."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3, H, W); got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1]; got dtype {x.dtype}")
    if x.shape[0] < min_count:
        raise ValueError(f"{name} must hold at least {min_count} image(s); got {x.shape[0]}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} has an empty spatial size {tuple(x.shape[2:])}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{name} must lie in [-1, 1] (clamp it first); got values in [{lo:.4g}, {hi:.4g}]")


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    # All FD/KID linear algebra runs in torch: mixing numpy's OpenBLAS thread pool with torch's
    # OpenMP pool makes both spin against each other on a small busy machine (10× slower).
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")


def _check_features(f: ArrayLike, name: str) -> torch.Tensor:
    """Return ``f`` as a float64 CPU tensor (N, d) after checking shape, size and finiteness."""
    f = _as_float64(f, name)
    if f.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d); got {tuple(f.shape)}")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 samples and 1 feature; got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return f


def _check_int(value, name: str, minimum: int) -> int:
    return check_int(value, name, minimum)
