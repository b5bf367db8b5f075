"""Sampling pixel-space diffusers ``UNet2DModel`` checkpoints at the trained size or m× larger.

Naive and guided runs at any size start from one resolution-consistent noise: the noise is drawn
at the largest size asked for and block-averaged down (``√k·D[noise]``, DESIGN.md §2), so the same
seed gives paired samples across resolutions. A stochastic scheduler that takes its per-step noise
as an argument (``variance_noise``: SDE-DPM-Solver++) gets it the same way; DDPM and Euler a draw it
from a seeded generator at the sample's own size, so their pairs share only the start.
The sampler is the plain diffusers loop (``scale_model_input`` → UNet → ``step``); Upsample
Guidance wraps the UNet call and so works with any scheduler, including those that scale inputs
(Euler, Heun) or call the UNet twice per step.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from hiresdiff.core.noise import lowres_noise
from hiresdiff.core.resample import check_divisible
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, nested_guided_prediction

UGArg = Union[UpsampleGuidanceConfig, Sequence[UpsampleGuidanceConfig], None]


def as_levels(ug: UGArg) -> list[UpsampleGuidanceConfig]:
    """``ug`` as a list of nested levels: [] for naive, [config] for one level, or the given sequence."""
    if ug is None:
        return []
    levels = [ug] if isinstance(ug, UpsampleGuidanceConfig) else list(ug)
    if not all(isinstance(c, UpsampleGuidanceConfig) for c in levels):
        raise TypeError(f"ug must be an UpsampleGuidanceConfig, a sequence of them or None; got {ug!r}")
    return levels


def load_pixel_model(path: Union[str, Path], scheduler: str = "ddim"):
    """Load a local ``UNet2DModel`` folder (fp32) and a scheduler of kind ``scheduler`` for it.

    The training schedule is read from ``scheduler_config.json`` in the folder (or its ``scheduler/``
    subfolder); without one, diffusers' DDPM defaults are used.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    from hiresdiff.integrations.schedulers import make_scheduler

    path = Path(path)
    unet_dir = path / "unet" if (path / "unet" / "config.json").exists() else path
    if not (unet_dir / "config.json").exists():
        raise FileNotFoundError(f"model path {str(path)!r} has no config.json: expected a local UNet2DModel folder (save_pretrained)")
    class_name = UNet2DModel.load_config(unet_dir).get("_class_name")
    if class_name != "UNet2DModel":
        raise ValueError(f"model path {str(path)!r} holds a {class_name!r}; hiresdiff's pixel sampler needs a UNet2DModel")
    unet = UNet2DModel.from_pretrained(unet_dir, torch_dtype=torch.float32).eval()
    for folder in (unet_dir, path, path / "scheduler"):
        if (folder / "scheduler_config.json").exists():
            base = DDPMScheduler.load_config(folder)
            break
    else:
        base = DDPMScheduler().config
    return unet, make_scheduler(scheduler, base)


def model_downsampling_factor(unet) -> int:
    """How much the UNet shrinks its input: 2 per down block that has a downsampler."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def check_size(unet, height: int, width: int, ug: UGArg) -> None:
    """Raise ``ValueError`` naming height/width unless the UNet (and every low-res pass) can take that size."""
    m = model_downsampling_factor(unet)
    for name, n in (("height", height), ("width", width)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int; got {n!r}")
        if n % m:
            raise ValueError(f"{name}={n} is not divisible by {m}, the UNet's downsampling factor")
    h, w = height, width
    for level in as_levels(ug):
        fh, fw = check_divisible((1, 1, h, w), level.factor, "height, width")[-2:]
        h, w = h // fh, w // fw
        if h % m or w % m:
            raise ValueError(f"height/width {height}x{width} divided by the UG factor {(fh, fw)} gives "
                             f"{h}x{w}, which is not divisible by {m}, the UNet's downsampling factor")


def initial_noise(num_images: int, channels: int, height: int, width: int, seed: int,
                  noise_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Standard normal noise of shape (num_images, channels, height, width) for ``seed``.

    With ``noise_size`` = (H', W'), an integer multiple of (height, width), the draw is made at H'×W'
    and reduced by ``√k·D`` so that every size from one seed shares its noise.
    """
    return consistent_noise(torch.Generator().manual_seed(seed), (num_images, channels, height, width), noise_size)


def consistent_noise(generator: torch.Generator, shape: Sequence[int], noise_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The next standard normal draw of ``generator`` made at ``noise_size`` and reduced to ``shape`` (B, C, H, W)."""
    *lead, height, width = shape
    big_h, big_w = noise_size or (height, width)
    if big_h % height or big_w % width:
        raise ValueError(f"noise_size {noise_size} must be an integer multiple of {(height, width)}")
    return lowres_noise(torch.randn((*lead, big_h, big_w), generator=generator), (big_h // height, big_w // width))


@torch.no_grad()
def sample(unet, scheduler, *, height: int, width: int, num_images: int = 1, seed: int = 0,
           steps: int = 25, ug: UGArg = None,
           class_labels: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
           noise_size: Optional[Sequence[int]] = None, progress: bool = True) -> torch.Tensor:
    """Sample ``num_images`` images of ``height``×``width`` in [-1, 1], naive (``ug=None``) or with UG.

    ``ug`` is one config, or a sequence of configs for nested guidance (e.g. two factor-2 levels for
    4× as ×2 twice, :func:`hiresdiff.methods.upsample_guidance.nested_guided_prediction`).

    ``noise`` (B, C, height, width) replaces the seeded initial draw; ``noise_size`` draws the seed's
    noise (the initial one unless given, and the per-step noise of schedulers that take ``variance_noise``)
    at a larger size and reduces it (see :func:`initial_noise`), so that samples of one seed at
    different sizes are paired. ``class_labels`` (B,) for class-conditional UNets.
    """
    from tqdm.auto import tqdm

    levels = as_levels(ug)
    check_size(unet, height, width, levels)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    if (class_labels is None) != (unet.config.num_class_embeds is None):
        raise ValueError("class_labels must be given exactly when the UNet is class-conditional (num_class_embeds set)")
    if noise is None:
        noise = initial_noise(num_images, unet.config.in_channels, height, width, seed, noise_size)
    elif not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or infinite values")
    prediction_type = scheduler.config.prediction_type
    alphas_cumprod = scheduler.alphas_cumprod

    def unet_fn(x, t):
        return unet(x, t, class_labels=class_labels).sample

    def model_fn(x, t):
        return nested_guided_prediction(unet_fn, x, t, alphas_cumprod, levels, prediction_type)

    scheduler.set_timesteps(steps)
    step_generator = torch.Generator().manual_seed(seed + 1)
    step_params = inspect.signature(scheduler.step).parameters
    takes_step_noise = "variance_noise" in step_params  # resolution-consistent per-step noise (unused by deterministic ones)
    fixed_step_kwargs = {"generator": step_generator} if "generator" in step_params else {}  # DDPM, Euler a draw their own
    x = noise.to(unet.dtype) * scheduler.init_noise_sigma
    for t in tqdm(scheduler.timesteps, desc=f"sampling {height}x{width}", disable=not progress, leave=False):
        model_in = scheduler.scale_model_input(x, t)
        pred = model_fn(model_in, t.float().expand(x.shape[0]))
        step_kwargs = ({"variance_noise": consistent_noise(step_generator, x.shape, noise_size).to(x)}
                       if takes_step_noise else fixed_step_kwargs)
        x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
    return x.clamp(-1, 1)


def to_pil(images: torch.Tensor):
    """(B, 3, H, W) tensors in [-1, 1] → list of PIL RGB images."""
    from PIL import Image

    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
