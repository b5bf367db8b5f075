"""Self-Cascade's pivot replacement (Guo et al. 2024, §3.1, eq. 9–10), as pure tensor functions.

Generation goes from the trained size to the target in stages. Stage 0 is a plain sample at the
trained size; every later stage r upsamples the previous result z₀^{r−1} with a resize φ, noises it
to an intermediate time K with one draw ε (eq. 10),

    z_K^r = √ᾱ_K · φ(z₀^{r−1}) + √(1−ᾱ_K) · ε,

and denoises K → 0 at its own size. The number of stages after the first is R = ⌈log₂ s⌉ for a side
ratio s (the paper's ⌈log₄ d_R/d⌉ in pixels); each stage doubles the sides until the last, which is
exactly the target, so 1.5×, 3× and non-square targets work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

from hiresdiff.checks import check_positive_int, check_strength, is_real
from hiresdiff.methods.family_defaults import FAMILY, FamilyDefaults
from hiresdiff.methods.freescale import check_detail_alpha

UPSAMPLE_MODES = ("bicubic", "bilinear", "nearest")
SPACES = ("latent", "rgb")

Size = tuple[int, int]
DetailAlpha = Union[None, float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def stage_sizes(trained: Sequence[int], target: Sequence[int], multiple: int = 1, ratio: float = 2.0) -> list[Size]:
    """The (height, width) of every stage from the trained size to ``target``, first to last.

    With s = max(H/h₀, W/w₀) and R = ⌈log_ρ s⌉ for the side ``ratio`` ρ between stages (2: Self-Cascade's and
    FreeScale's doubling; ρ ≥ s, or ρ = ∞: one jump from the trained size to the target), stage r < R has size
    target·ρ^r/s rounded down to a multiple of ``multiple`` (the model's size granularity); the last stage is the
    target. Stage 0
    is the trained size when the target has the trained aspect ratio; for another aspect ratio it is
    the largest size of the target's aspect that fits the trained size (no stretching between stages).
    ``ValueError`` names ``height``/``width`` for a target smaller than the trained size on both sides
    or not divisible by ``multiple``.
    """
    (h0, w0), (height, width) = tuple(trained), check_size(target, multiple)
    s = max(height / h0, width / w0)
    if s < 1:
        raise ValueError(
            f"height x width {height}x{width} is smaller than the trained size {h0}x{w0}: a cascade only goes up"
        )
    if s <= 1:
        stages = 0
    elif math.isinf(ratio):  # one jump whatever the scale
        stages = 1
    else:
        stages = math.ceil(math.log(s) / math.log(ratio) - 1e-9)
    sizes = []
    for r in range(stages):
        shrink = s / ratio**r
        sizes.append(
            (
                max(multiple, int(height / shrink) // multiple * multiple),
                max(multiple, int(width / shrink) // multiple * multiple),
            )
        )
    return sizes + [(height, width)]


def check_size(size: Sequence[int], multiple: int = 1) -> Size:
    """``size`` as (height, width); ``ValueError`` naming height/width unless positive ints divisible by
    ``multiple``."""
    height, width = tuple(size)
    for name, n in (("height", height), ("width", width)):
        check_positive_int(n, name)
        if n % multiple:
            raise ValueError(f"{name}={n} is not divisible by {multiple}, the model's size multiple")
    return height, width


def restart_index(steps: int, strength: float) -> int:
    """The index of the first step a later stage runs: K = strength·T on the grid of ``steps`` steps.

    As diffusers' img2img: ``steps − int(steps·strength)``, so 50 steps at strength 0.7 restart at
    index 15 (FreeScale's ``restart_steps``) and run 35 steps.
    """
    return steps - min(int(steps * strength), steps)


def resize(x: torch.Tensor, size: Sequence[int], mode: str = "bicubic") -> torch.Tensor:
    """φ: resize the trailing (H, W) of images (B, C, H, W) or videos (B, C, F, H, W), frame by frame."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}; got {mode!r}")
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.ndim == 5:
        b, c, f, h, w = x.shape
        frames = resize(x.transpose(1, 2).reshape(b * f, c, h, w), size, mode)
        return frames.reshape(b, f, c, *size).transpose(1, 2)
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    return F.interpolate(x.float(), size=size, mode=mode, **kwargs).to(x.dtype)


def pivot_noise_vp(pivot: torch.Tensor, noise: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Eq. 10 in the VP parametrisation: √ᾱ_K · φ(z₀) + √(1−ᾱ_K) · ε (for checking schedulers' ``add_noise``)."""
    return math.sqrt(alpha_bar) * pivot + math.sqrt(1 - alpha_bar) * noise


@dataclass
class CascadeConfig:
    """Settings of a self-cascade (Self-Cascade's pivot replacement; FreeScale's tailored cascade).

    Attributes:
        strength: share of the steps re-run in every later stage, in (0, 1]: it restarts at step K = N − int(N·strength)
            of its grid, the step fraction 1 − strength (Self-Cascade 0.7; FreeScale restarts at step 15 of 50, also
            0.7). ``None``: the model family's (:mod:`hiresdiff.methods.family_defaults`: 0.7 diffusion, 0.3 flow).
        upsample: φ's interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        upscaler: φ as a super-resolution network instead (``None``: interpolate): a callable from images
            (B, 3, H, W) in [-1, 1] and a size (H', W') to the images at that size
            (:func:`hiresdiff.loading.upscaler.load_upscaler` makes one from a model file). It acts on decoded images
            for every model, as ``space="rgb"`` does.
        space: ``"latent"`` (resize the latents, Self-Cascade) or ``"rgb"`` (VAE decode → resize → encode,
            FreeScale's choice for images), or ``"family"``: FreeScale's choice per model family, ``"rgb"`` for images
            and ``"latent"`` for videos (its finding: the RGB round trip's blur helps images, hurts videos). Pixel
            models resize the image either way.
        steps: sampling steps of a later stage's full schedule (it runs ``int(steps·strength)`` of them);
            ``None`` takes the steps of the call.
        target_steps: the same for the last stage, at the target, where a step costs most (``None``: ``steps``).
        detail_alpha: FreeScale's detail control (``None`` = off): before every UNet call of a later stage
            z ← (1−c)·z + c·z̃_t with z̃_t the upsampled pivot noised to t by the stage's ε and
            c = ((1 + cos(π(T−t)/T))/2)^α. α is a number, a map (H, W) at any resolution (resized to each
            stage), a callable from the previous stage's decoded image (B, 3, H, W) in [-1, 1] to such a map, or
            ``"family"``: the model family's (2 diffusion, 0.5 flow).
        stage_ratio: the side ratio between consecutive stages (> 1): 2 doubles the sides every stage (both papers);
            a ratio at least the target's scale (``math.inf`` at any scale) jumps from the trained size to the target
            in one stage.
        shared_steps: the stages share the call's steps, so that the run makes no more denoiser calls than plain
            sampling at the same ``steps`` (the fast recipe): every later stage runs at most
            ⌊⌊steps/2⌋ / its number⌋ steps (at least 1; its grid shortened to match), stage 0 the rest; with fewer steps
            than stages the run jumps to the target in one stage, and with one step it is plain sampling at the target
            (:func:`hiresdiff.sampling.run_plan.plan_run` says which, in a warning).
        inversion: how a later stage's start z_K is noised. ``None``: with fresh ε (eq. 10, both papers). A share
            γ in [0, 1]: from the deterministic inversion of φ(z₀^{r−1}) to step K (the model's ODE run backward on
            the stage's own grid, one model call per step the stage then runs, :mod:`hiresdiff.sampling.inversion`),
            its implied noise mixed with fresh ε by :func:`injected_noise` — γ = 0 pure inversion, γ > 0 PixelRush's
            noise injection against over-smoothing.
        stage_scheduler: the scheduler the later stages sample with (``None``: the pipeline's): an instance, e.g.
            ``LCMScheduler.from_config(pipe.scheduler.config)``, or a short name of
            :data:`hiresdiff.sampling.schedulers.SCHEDULERS` (``"lcm"``) made from the pipeline's training schedule;
            with a few-step ``stage_lora``; UNet pipelines.
        stage_lora: a LoRA active during the later stages only (anything the pipeline's ``load_lora_weights``
            takes), loaded for each later stage and removed after it (:mod:`hiresdiff.sampling.stage_lora`).
        tiles: a later stage's denoiser calls made on overlapping tiles of the trained size, blended with Gaussian
            feathering, overlapping by at least this share of a tile in [0, 1) (:mod:`hiresdiff.hooks.tiled_denoising`:
            the denoiser's memory is a tile's at any target size); ``None``: whole.

    A flow model's stages are shifted by the call's ``shift`` policy (:mod:`hiresdiff.methods.flow_shift`).
    """

    strength: Optional[float] = None
    upsample: str = "bicubic"
    upscaler: Optional[Callable[[torch.Tensor, Sequence[int]], torch.Tensor]] = None
    space: str = "latent"
    steps: Optional[int] = None
    target_steps: Optional[int] = None
    detail_alpha: DetailAlpha = None
    stage_ratio: float = 2.0
    shared_steps: bool = False
    inversion: Optional[float] = None
    tiles: Optional[float] = None
    stage_scheduler: Optional[Any] = None
    stage_lora: Optional[Any] = None

    def __post_init__(self):
        if self.strength is not None:
            check_strength(self.strength)
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}; got {self.upsample!r}")
        if self.upscaler is not None and not callable(self.upscaler):
            raise ValueError(
                f"upscaler must be None or a callable (images, size) -> images, e.g. load_upscaler(path); "
                f"got {self.upscaler!r}"
            )
        if self.space not in SPACES + (FAMILY,):
            raise ValueError(f"space must be one of {SPACES + (FAMILY,)}; got {self.space!r}")
        for name in ("steps", "target_steps"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if not (isinstance(self.detail_alpha, str) and self.detail_alpha == FAMILY):
            check_detail_alpha(self.detail_alpha)
        if not (is_real(self.stage_ratio) and self.stage_ratio > 1):
            raise ValueError(f"stage_ratio must be a number above 1; got {self.stage_ratio!r}")
        if self.inversion is not None and not (is_real(self.inversion) and 0 <= self.inversion <= 1):
            raise ValueError(
                f"inversion must be None (fresh noise) or the share of fresh noise in [0, 1]; got {self.inversion!r}"
            )
        if self.tiles is not None and not (is_real(self.tiles) and 0 <= self.tiles < 1):
            raise ValueError(f"tiles must be None (whole) or the tiles' overlap share in [0, 1); got {self.tiles!r}")

    def for_family(self, defaults: FamilyDefaults, video: bool = False) -> CascadeConfig:
        """This config with the settings it leaves to the model family (``strength=None``,
        ``detail_alpha="family"``, ``space="family"``) filled in from ``defaults`` and whether the model makes
        ``video``."""
        strength = defaults.strength if self.strength is None else self.strength
        alpha = self.detail_alpha
        if isinstance(alpha, str) and alpha == FAMILY:
            alpha = defaults.detail_alpha
        space = ("latent" if video else "rgb") if self.space == FAMILY else self.space
        return dataclasses.replace(self, strength=strength, detail_alpha=alpha, space=space)

    def stage_steps(self, steps: int, last: bool = False) -> int:
        """The full schedule length of a later stage (``last``: the stage at the target) for a call of ``steps``."""
        return (last and self.target_steps) or self.steps or steps

    def steps_run(self, steps: int, last: bool = False) -> int:
        """The steps a later stage runs for a call of ``steps``: the last int(T·strength) of its grid of T =
        :meth:`stage_steps` (from :func:`restart_index`)."""
        grid = self.stage_steps(steps, last)
        return grid - restart_index(grid, self.strength)


def implied_noise(start: torch.Tensor, pivot: torch.Tensor, signal: float, noise: float) -> torch.Tensor:
    """The ε that noises ``pivot`` to ``start`` at a level x = a·x₀ + b·ε (``signal`` a, ``noise`` b > 0):
    ε = (x − a·x₀)/b, in float32."""
    return (start.float() - signal * pivot.float()) / noise


def injected_noise(inverted: torch.Tensor, fresh: torch.Tensor, share: float) -> torch.Tensor:
    """√(1−γ)·ε_inv + √γ·ε: the inversion's implied noise with a share γ (``share``) of fresh noise's variance; for
    independent unit-variance ε_inv and ε the mix has unit variance (γ = 0 keeps the inversion, 1 is fresh noise)."""
    return math.sqrt(1 - share) * inverted + math.sqrt(share) * fresh
