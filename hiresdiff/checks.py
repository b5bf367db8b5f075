"""The argument checks every layer shares, one place for each rule:
a bad input is refused by a ``ValueError`` that names
the parameter and the allowed values, before any heavy work. Pure Python: the math packages use it too."""

from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
    """An int (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (int or float, numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless it is an int ≥ ``minimum``."""
    if not is_int(value) or value < minimum:
        allowed = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return int(value)


def check_positive_int(value, name: str) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a positive int."""
    check_int(value, name, 1)


SHIFT_POLICIES = ("trained", "pipeline", "resolution")  # a flow model's σ-grid shift (hiresdiff.methods.flow_shift)


def check_shift(shift) -> None:
    """``ValueError`` naming ``shift`` unless it is ``None`` (the default), a policy name or a finite number > 0."""
    if shift is None or shift in SHIFT_POLICIES:
        return
    if not (is_real(shift) and not isinstance(shift, bool) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be one of {SHIFT_POLICIES} or a number > 0 (a fixed shift); got {shift!r}")


def check_strength(strength) -> None:
    """``ValueError`` naming ``strength`` unless it lies in (0, 1]."""
    if not (is_real(strength) and 0 < strength <= 1):
        raise ValueError(f"strength must lie in (0, 1]; got {strength!r}")


def check_scales(scales, name: str = "scale") -> None:
    """``ValueError`` naming ``name`` unless every scale (one, or a list or tuple of them) is a finite number > 1."""
    for scale in scales if isinstance(scales, (list, tuple)) else [scales]:
        if not (is_real(scale) and math.isfinite(scale) and scale > 1):
            raise ValueError(f"{name} must be a number > 1 (1.5, 2, 3, …); got {scale!r}")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def cannot_load(what: str, source, error: BaseException) -> ValueError:
    """The one error for a file or folder that exists but does not load (a broken config, a truncated weights file):
    one line naming ``what`` and ``source``, instead of the loader's traceback."""
    return ValueError(f"{what} {str(source)!r} cannot be loaded ({type(error).__name__}: {first_line(error)})")
