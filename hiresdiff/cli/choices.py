"""The allowed values of the command line's options and their checks, in a module that imports nothing heavy: each
command's ``run`` function calls these first, so a bad option value is refused (one line naming the option, exit 2)
before torch and diffusers load, as ``--help`` answers without them.

The checks here are the plain ones: names, counts, ranges, sizes. What needs the recipe objects (whether two presets
compose, whether an option applies to the chosen methods) or the model (its trained size, its classes, a device this
machine has) is checked after the imports, still before any weights load. Where a heavy module keeps its own list of the
same names (``hiresdiff.cost.plan``: ``PLAN_ARCHS``, ``DTYPES``; ``hiresdiff.eval.benchmark``: ``SUITES``;
``hiresdiff.recipe.Recipe.preset``), the tests assert that the two agree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from hiresdiff.checks import SHIFT_POLICIES, is_int
from hiresdiff.defaults import PRESETS

#: --dtype names and the torch dtypes they mean (by attribute name: ``getattr(torch, DTYPES[name])``).
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
#: ``hiresdiff plan --arch``: the architectures :mod:`hiresdiff.cost.plan` builds on ``meta``.
PLAN_ARCHS = ("sd15", "sdxl", "flux1-dev", "wan2.1-1.3b", "wan2.1-14b")
#: ``hiresdiff bench --suite``: the suites of :mod:`hiresdiff.eval.benchmark`, and those that need ``--upscaler``.
BENCH_SUITES = ("ug", "methods", "latent", "fast", "headline", "shift", "strength", "inversion", "sr", "refine")
SR_SUITES = ("sr", "refine")


def shift_option(text: str):
    """``--shift``: a policy name, or a number > 0 (a fixed shift) as a float; ``ValueError`` naming the option."""
    if text in SHIFT_POLICIES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--shift must be one of {', '.join(SHIFT_POLICIES)} or a number > 0; got {text!r}")
    return value


def check_method_names(items: Sequence[str]) -> list[str]:
    """``["naive,ug", "freescale+ug"]`` → ``["naive", "ug", "freescale+ug"]``; ``ValueError`` for an empty list, a
    name that is no preset, or a preset composed with itself, in the words of
    :func:`hiresdiff.options.parse_methods` (whether the presets of a composition fit together is its question)."""
    methods = [m.strip() for item in items for m in item.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--method needs at least one of {', '.join(PRESETS)} (or an 'a+b' composition)")
    for name in methods:
        parts = [p.strip() for p in name.split("+")]
        if any(p not in PRESETS for p in parts):
            raise ValueError(f"method must be one of {PRESETS} or a '+'-composition of them; got {name!r}")
        repeated = sorted({p for p in parts if parts.count(p) > 1})
        if repeated:
            raise ValueError(f"method {name!r} composes {', '.join(repeated)} with itself: name each preset once")
    return methods


def check_one_method(items: Sequence[str], command: str) -> str:
    """The one method of ``--method`` (``batch`` and ``upscale`` take one); ``ValueError`` naming it otherwise."""
    methods = check_method_names(items)
    if len(methods) != 1:
        raise ValueError(f"--method: {command} takes one method; got {', '.join(methods)}")
    return methods[0]


def check_at_least_one(args, *flags: str) -> None:
    """``ValueError`` naming the flag for a count below 1 among ``flags`` (argparse's ``type=int`` takes 0 and -3)."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1; got {value}")


def check_finite(value, flag: str) -> None:
    """``ValueError`` naming ``flag`` for a NaN or infinite number (argparse's ``type=float`` takes ``nan``)."""
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number; got {value}")


def check_part_options(args) -> None:
    """The ranges of the methods' part options (:class:`hiresdiff.options.MethodOptions`), as their configs check
    them: θ a finite number >= 0, η and the inversion's share of fresh noise in [0, 1], strength in (0, 1], α a finite
    number >= 0; the upscaler a file."""
    upscaler = getattr(args, "upscaler", None)
    if upscaler is not None and upscaler != "shipped" and not os.path.isfile(upscaler):
        raise ValueError(f"--upscaler: {upscaler} is not a file (a super-resolution model: .pth, .safetensors, .ckpt)")
    theta, eta, strength, alpha = (getattr(args, name, None) for name in ("theta", "eta", "strength", "alpha"))
    tiles = getattr(args, "tiles", None)
    if tiles is not None and not 0 <= tiles < 1:
        raise ValueError(f"--tiles must lie in [0, 1) (the tiles' overlap share); got {tiles}")
    inversion = getattr(args, "inversion", None)
    if inversion is not None and not 0 <= inversion <= 1:
        raise ValueError(f"--inversion must lie in [0, 1] (the share of fresh noise); got {inversion}")
    if theta is not None and not (math.isfinite(theta) and theta >= 0):
        raise ValueError(f"--theta must be a finite number >= 0; got {theta}")
    if eta is not None and not 0 <= eta <= 1:
        raise ValueError(f"--eta must lie in [0, 1]; got {eta}")
    if strength is not None and not 0 < strength <= 1:
        raise ValueError(f"--strength must lie in (0, 1]; got {strength}")
    if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"--alpha must be a finite number >= 0; got {alpha}")


def check_dtype(name, flag: str = "--dtype") -> None:
    if name is not None and name not in DTYPES:
        raise ValueError(f"{flag} must be one of {', '.join(DTYPES)}; got {name!r}")


def check_plan_arch(arch: str) -> None:
    if arch not in PLAN_ARCHS:
        raise ValueError(f"--arch must be one of {', '.join(PLAN_ARCHS)}; got {arch!r}")


def check_factor(factor) -> None:
    """``--factor``: an int >= 1 or comma-separated ints >= 1, one of them >= 2 (UG scales some axis)."""
    if factor is None:
        return
    values = factor if isinstance(factor, tuple) else (factor,)
    if not all(is_int(v) and v >= 1 for v in values) or max(values) < 2:
        raise ValueError(
            f"--factor must be ints >= 1, at least one of them >= 2 (e.g. 2,1,1); got "
            f"{','.join(str(v) for v in values)}"
        )
