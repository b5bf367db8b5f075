"""FreeScale (Qiu et al. 2024) as pure tensor math: detail control, restrained dilation, scale fusion.

* **Detail control** (paper: "Flexible Control for Detail Level"): before a UNet call at time t of an
  upscaling stage, ẑ_t = c·z̃_t + (1 − c)·z_t with z̃_t the upsampled pivot noised to t and the scaled
  cosine decay c = ((1 + cos(π(T − t)/T))/2)^α: c = 1 at t = T (all pivot), 0 at t = 0. (T − t)/T is read as
  the step fraction p of the stage's grid (:mod:`hiresdiff.core.step_fraction`; equal on the paper's uniform
  grid). α is a number (the release's ``cosine_scale``, 2.0) or a map (H, W) (the release builds it from a mask:
  3.0 in the foreground, 0.5 in the background).
* **Restrained dilated convolution** (paper: "Restrained Dilated Convolution", after ScaleCrafter): the
  convs of the deepest down level and of the mid block — never the up blocks — run with the kernel
  dilated by the stage's scale per axis (d_h, d_w), only while t ≥ T − until·T (read as p < until on the step
  fraction: the first ``until`` of the stage's steps). A non-integer scale is
  rounded half up to an integer ≥ 1 (1.5× → 2, 1.4× → 1); ScaleCrafter's re-dilation, which resamples
  the feature map to dilate by a fractional factor, is not implemented.
* **Scale fusion** (paper: "Scale Fusion"): h_fusion = G(h_local) + (h_global − G(h_global)) with
  h_local the self-attention inside windows of the trained token grid (stride half a window, overlaps
  averaged) and G a 2-D Gaussian blur over the token grid, kernel 2s − 1, σ = 1. The blur pads by
  replicating the border tokens: it keeps constants, so G commutes with the attention's affine output
  projection and residual, and it works on grids smaller than the kernel (the release pads with zeros,
  which leaks the border's low frequencies into the "high-frequency" term h_global − G(h_global)).
  Interior windows are jittered by up to window/8 as in the release, but the first and last window of
  each axis stay flush with the grid's edges (the release shifts them into zero padding), so every
  token is covered without padding the grid.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from hiresdiff.checks import check_positive_int, is_int, is_real
from hiresdiff.core.step_fraction import in_window

NON_INTEGER_SCALES = ("round",)


# --- detail control -------------------------------------------------------------------------------------


def check_detail_alpha(alpha) -> None:
    """``ValueError`` naming ``detail_alpha`` unless it is None, a number ≥ 0, a map (H, W) ≥ 0 or a callable."""
    allowed = "None, a number >= 0, a tensor map (H, W) >= 0 or a callable from an image to such a map"
    if alpha is None or (callable(alpha) and not isinstance(alpha, torch.Tensor)):
        return
    if is_real(alpha):
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"detail_alpha must be {allowed}; got {alpha!r}")
        return
    if not isinstance(alpha, torch.Tensor):
        raise ValueError(f"detail_alpha must be {allowed}; got a {type(alpha).__name__}")
    if alpha.ndim != 2:
        raise ValueError(f"detail_alpha must be {allowed}; got a tensor of shape {tuple(alpha.shape)}")
    if not (torch.isfinite(alpha).all() and (alpha >= 0).all()):
        raise ValueError(f"detail_alpha must be {allowed}; got a map with negative, NaN or infinite values")


def detail_weight(progress, alpha) -> torch.Tensor:
    """c = ((1 + cos(π·p))/2)^α (the detail-control decay) at the step fraction p ∈ [0, 1] of one call (the paper's
    (T − t)/T).

    ``alpha`` is a number (returns a 0-dim tensor) or a map (H, W) (returns a map of the same shape).
    """
    check_detail_alpha(alpha)
    if not (is_real(alpha) or isinstance(alpha, torch.Tensor)):
        raise ValueError(f"detail_alpha must be a number or a map (H, W) here; got {alpha!r}")
    if isinstance(progress, torch.Tensor) and progress.numel() == 1:
        progress = float(progress)
    if not (is_real(progress) and 0 <= progress <= 1):
        raise ValueError(f"progress must be a number in [0, 1] or a one-element tensor; got {progress!r}")
    base = (1 + math.cos(math.pi * progress)) / 2
    if isinstance(alpha, torch.Tensor):
        return torch.pow(base, alpha if alpha.is_floating_point() else alpha.float())
    return torch.tensor(base**alpha, dtype=torch.float32)


def blend_detail(z: torch.Tensor, z_tilde: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """ẑ = (1 − c)·z + c·z̃ (the detail-control blend).

    ``c`` is a number or a map (H, W), which broadcasts over images (B, C, H, W) and videos (B, C, F, H, W).
    """
    c = torch.as_tensor(c, device=z.device).to(z.dtype)
    if c.ndim == 2 and tuple(c.shape) != tuple(z.shape[-2:]):
        raise ValueError(
            f"c must be a number or a map of the sample's (H, W) {tuple(z.shape[-2:])}; got {tuple(c.shape)}"
        )
    if c.ndim not in (0, 2):
        raise ValueError(f"c must be a number or a map (H, W); got a tensor of shape {tuple(c.shape)}")
    return (1 - c) * z + c * z_tilde


def detail_alpha_map(mask: torch.Tensor, foreground: float = 3.0, background: float = 0.5) -> torch.Tensor:
    """α = mask·α_fg + (1 − mask)·α_bg for a mask (H, W) in [0, 1] (the release's defaults 3.0 / 0.5)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        raise ValueError(f"mask must be a tensor (H, W) with values in [0, 1]; got {getattr(mask, 'shape', mask)!r}")
    if not ((mask >= 0) & (mask <= 1)).all():
        raise ValueError("mask must be a tensor (H, W) with values in [0, 1]; got values outside [0, 1] or NaN")
    for name, value in (("foreground", foreground), ("background", background)):
        if not (is_real(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    mask = mask.float() if not mask.is_floating_point() else mask
    return mask * foreground + (1 - mask) * background


def resize_alpha(alpha: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A map α (H, W) resized to a stage's (h, w) (bilinear, antialiased when shrinking; unchanged if equal)."""
    check_detail_alpha(alpha)
    size = tuple(size)
    if tuple(alpha.shape) == size:
        return alpha
    resized = F.interpolate(alpha[None, None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0, 0].to(alpha.dtype) if alpha.is_floating_point() else resized[0, 0]


# --- restrained dilated convolution ----------------------------------------------------------------------


@dataclass
class DilationConfig:
    """Restrained dilated convolution (FreeScale, "Restrained Dilated Convolution").

    Attributes:
        until: share of the stage's steps, from the first, during which the convs are dilated: active while the
            step fraction p < until (:mod:`hiresdiff.core.step_fraction`; the release's ``dilate_tau = 35`` of 50
            steps is 0.7). In [0, 1]; ``None``: the model family's (:mod:`hiresdiff.methods.family_defaults`: 0.7
            on UNets, 0.88 for position interpolation, its analogue on a flow transformer).
        non_integer: what a non-integer stage scale does; only ``"round"`` (to the nearest integer ≥ 1).
    """

    until: Optional[float] = None
    non_integer: str = "round"

    def __post_init__(self):
        if self.until is not None and not (is_real(self.until) and 0 <= self.until <= 1):
            raise ValueError(f"until must be a number in [0, 1]; got {self.until!r}")
        if self.non_integer not in NON_INTEGER_SCALES:
            raise ValueError(f"non_integer must be one of {NON_INTEGER_SCALES}; got {self.non_integer!r}")

    def for_family(self, defaults) -> DilationConfig:
        """This config with ``until=None`` filled in from ``defaults``
        (:class:`~hiresdiff.methods.family_defaults.FamilyDefaults`)."""
        return self if self.until is not None else dataclasses.replace(self, until=defaults.until)

    def is_active(self, progress: float) -> bool:
        """Whether a call at step fraction ``progress`` dilates: p < until (filled in by :meth:`for_family`)."""
        if self.until is None:
            raise ValueError("until is the model family's: fill it in with for_family before sampling")
        return bool(in_window(progress, self.until))

    def dilation_for_scale(self, scale_hw: Sequence[float]) -> tuple[int, int]:
        """(d_h, d_w): each axis's scale rounded half up to an integer, at least 1."""
        d_h, d_w = (max(1, math.floor(s + 0.5)) for s in scale_hw)
        return d_h, d_w


def dilated_padding(kernel_size: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    """The padding that keeps a conv's output size when its odd kernel is dilated: p + (d − 1)·(k − 1)/2.

    For a "same" conv (p = k//2) this is d·(k//2); it also keeps the size of strided convs.
    """
    return tuple(p + (d - 1) * (k - 1) // 2 for k, p, d in zip(kernel_size, padding, dilation))


# --- scale fusion ---------------------------------------------------------------------------------------


@dataclass
class ScaleFusionConfig:
    """Scale fusion of global and local self-attention (FreeScale, "Scale Fusion").

    Attributes:
        sigma: σ of the Gaussian low-pass G, > 0 (release: 1.0).
        kernel: odd kernel size of G; ``None`` = 2s − 1 with s the stage's scale rounded (release).
        jitter: shift interior windows by a seeded random offset of up to window/8 (release: on).
        seed: seed of the jitter; each layer and time draws its own offsets from it.
        windows_per_batch: windows per ``scaled_dot_product_attention`` call; ``None`` = as many as hold
            as many tokens as the whole grid, so one batch never needs more memory than the global attention.
    """

    sigma: float = 1.0
    kernel: Optional[int] = None
    jitter: bool = True
    seed: int = 0
    windows_per_batch: Optional[int] = None

    def __post_init__(self):
        if not (is_real(self.sigma) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0; got {self.sigma!r}")
        if self.kernel is not None:
            check_kernel(self.kernel)
        if not isinstance(self.jitter, bool):
            raise ValueError(f"jitter must be True or False; got {self.jitter!r}")
        if not is_int(self.seed):
            raise ValueError(f"seed must be an int; got {self.seed!r}")
        if self.windows_per_batch is not None:
            check_positive_int(self.windows_per_batch, "windows_per_batch")

    def kernel_for(self, scale_hw: Sequence[float]) -> int:
        """G's kernel size at a stage scale: ``kernel`` or 2s − 1 with s = max scale rounded, at least 1."""
        if self.kernel is not None:
            return self.kernel
        return 2 * max(1, math.floor(max(scale_hw) + 0.5)) - 1


def check_kernel(kernel: int) -> None:
    """``ValueError`` naming ``kernel`` unless it is an odd positive int (a Gaussian with a centre tap)."""
    if not (is_int(kernel) and kernel >= 1 and kernel % 2 == 1):
        raise ValueError(f"kernel must be an odd positive int; got {kernel!r}")


def gaussian_kernel_2d(size: int, sigma: float) -> torch.Tensor:
    """The (size, size) Gaussian exp(−r²/2σ²) centred on the middle tap, normalised to sum 1 (float64)."""
    check_kernel(size)
    if not (is_real(sigma) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """G on maps (B, C, H, W): depthwise 2-D Gaussian, replicate padding. ``kernel`` 1 returns ``x`` itself."""
    weights = gaussian_kernel_2d(kernel, sigma)
    if kernel == 1:
        return x
    pad = kernel // 2
    channels = x.shape[1]
    weights = weights.to(x.device, x.dtype).expand(channels, 1, kernel, kernel)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), weights, groups=channels)


def gaussian_blur_tokens(x: torch.Tensor, grid_hw: Sequence[int], kernel: int, sigma: float) -> torch.Tensor:
    """G on tokens (B, N, C) laid out row-major on the grid (h, w), N = h·w (see :func:`gaussian_blur`)."""
    h, w = grid_hw
    b, n, c = x.shape
    if h * w != n:
        raise ValueError(f"grid_hw {tuple(grid_hw)} does not hold the {n} tokens of the input")
    maps = x.transpose(1, 2).reshape(b, c, h, w)
    return gaussian_blur(maps, kernel, sigma).reshape(b, c, n).transpose(1, 2)


def fuse(
    global_out: torch.Tensor, local_out: torch.Tensor, blur: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The fusion equation: h_fusion = G(h_local) + (h_global − G(h_global)), low-pass local plus high-pass global."""
    return blur(local_out) + (global_out - blur(global_out))


def window_starts(
    length: int, window: int, stride: int, jitter: int = 0, generator: Optional[torch.Generator] = None
) -> list[int]:
    """Start indices of windows covering an axis of ``length``: 0, stride, 2·stride, … and a last one flush
    with the end. With ``jitter`` > 0 every window but the first and last moves by a uniform integer offset in
    [−jitter, jitter] drawn from ``generator`` (clamped to the axis); coverage needs jitter ≤ (window − stride)/2.
    """
    if not (isinstance(window, int) and 1 <= window <= length):
        raise ValueError(f"window must be an int in [1, {length}] (the grid's length); got {window!r}")
    if not (isinstance(stride, int) and 1 <= stride <= window):
        raise ValueError(f"stride must be an int in [1, window={window}]; got {stride!r}")
    if not (isinstance(jitter, int) and 0 <= 2 * jitter <= window - stride):
        raise ValueError(
            f"jitter must be an int in [0, (window - stride)/2 = {(window - stride) // 2}]; got {jitter!r}"
        )
    starts = list(range(0, length - window, stride)) + [length - window]
    if jitter == 0 or len(starts) < 3:
        return starts
    offsets = torch.randint(-jitter, jitter + 1, (len(starts) - 2,), generator=generator).tolist()
    interior = [min(max(s + o, 0), length - window) for s, o in zip(starts[1:-1], offsets)]
    return [starts[0], *interior, starts[-1]]


def downsampled_size(size: Sequence[int], level: int) -> tuple[int, int]:
    """(h, w) after ``level`` stride-2 downsamplers (each ⌈n/2⌉, as a 3×3 stride-2 conv with padding 1)."""
    h, w = size
    for _ in range(level):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def token_level(size: Sequence[int], tokens: int) -> int:
    """The UNet level l whose grid :func:`downsampled_size` (size, l) holds ``tokens`` tokens."""
    level, (h, w) = 0, tuple(size)
    while h * w > tokens and (h, w) != (1, 1):
        level += 1
        h, w = downsampled_size(size, level)
    if h * w != tokens:
        raise ValueError(f"{tokens} tokens are not a downsampled grid of the call's size {tuple(size)}")
    return level


def fusion_window_starts(
    config: ScaleFusionConfig, index: int, call, grid: tuple[int, int], window: tuple[int, int]
) -> tuple[list[int], list[int]]:
    """The window starts (rows, columns) of attention layer ``index`` in a denoiser ``call`` (its ``timestep``): stride
    half a window, interior windows jittered by up to window/8 from a generator seeded by (``config.seed``, ``index``,
    t), so every family's fusion draws the same windows for the same call."""
    t = float(call.timestep.max())
    generator = torch.Generator().manual_seed(zlib.crc32(f"{config.seed}:{index}:{t!r}".encode()))
    return tuple(
        window_starts(g, w, max(1, w // 2), w // 8 if config.jitter else 0, generator) for g, w in zip(grid, window)
    )
