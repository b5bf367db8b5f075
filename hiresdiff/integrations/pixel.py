"""Sampling pixel-space diffusers ``UNet2DModel`` checkpoints at the trained size or larger, with any recipe.

Runs at any size start from one resolution-consistent noise: the noise is drawn at the largest size
asked for and block-averaged down (``√k·D[noise]``, DESIGN.md §2), so the same seed gives paired
samples across resolutions. A stochastic scheduler that takes its per-step noise as an argument
(``variance_noise``: SDE-DPM-Solver++) gets it the same way; DDPM and Euler a draw it from a seeded
generator at the sample's own size, so their pairs share only the start.
The sampler is the plain diffusers loop (``scale_model_input`` → UNet → ``step``) run once per stage
of the recipe (:mod:`hiresdiff.recipe`); the per-call parts (Upsample Guidance, dilation, scale fusion,
feature upsamplers) are hooks on the UNet (:mod:`hiresdiff.integrations.stage`), so they work with any
scheduler, including those that scale inputs (Euler, Heun) or call the UNet twice per step.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from hiresdiff.core.noise import lowres_noise
from hiresdiff.integrations.codecs import PixelCodec, upsample_pivot
from hiresdiff.integrations.stage import load_upsamplers, stage_detail, stage_modifications
from hiresdiff.integrations.unet_families import size_multiple, trained_size
from hiresdiff.methods.self_cascade import restart_index
from hiresdiff.recipe import Recipe, stages_after


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


def check_sample_args(unet, steps: int, class_labels: Optional[torch.Tensor], noise: Optional[torch.Tensor],
                      shape: Sequence[int]) -> None:
    """Raise ``ValueError`` naming the argument before any UNet call: steps, class labels, noise."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    if (class_labels is None) != (unet.config.num_class_embeds is None):
        raise ValueError("class_labels must be given exactly when the UNet is class-conditional (num_class_embeds set)")
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise must have shape {tuple(shape)} (the first stage's); got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or infinite values")


@torch.no_grad()
def sample(unet, scheduler, *, height: int, width: int, num_images: int = 1, seed: int = 0, steps: int = 25,
           class_labels: Optional[torch.Tensor] = None, recipe: Optional[Recipe] = None, return_stages: bool = False,
           noise: Optional[torch.Tensor] = None, noise_size: Optional[Sequence[int]] = None,
           image: Optional[torch.Tensor] = None, progress: bool = True) -> Union[torch.Tensor, list[torch.Tensor]]:
    """Sample ``num_images`` images of ``height``×``width`` in [-1, 1] with ``recipe`` (``None``: plain sampling).

    The recipe's stages run one after the other (:meth:`hiresdiff.recipe.Recipe.stages`): the first is plain
    sampling of its size from the seed's noise (``noise`` (B, C, h, w) replaces that draw); every later
    stage resizes the previous result to its size, noises it to the restart time K with one draw ε
    (``scheduler.add_noise``, i.e. √ᾱ_K·φ(x₀) + √(1−ᾱ_K)·ε in each scheduler's own parametrisation) and
    denoises K → 0 with the stage's per-call parts attached (:func:`stage_modifications`).
    ``return_stages=True`` returns every stage's result, the first being exactly ``sample(…)`` at the
    trained size for the same seed and ``noise_size``.

    ``noise_size`` draws the first stage's noise (the initial one, and the per-step noise of schedulers
    that take ``variance_noise``) at a larger size and reduces it (:func:`initial_noise`), so that samples
    of one seed at different sizes are paired. Later stages draw ε and their step noise from the same
    seeded generator, at their own size. ``class_labels`` (B,) for class-conditional UNets.

    ``image`` (B, C, h, w) in [-1, 1] upscales an existing image: it stands in for the result of the stage
    of size (h, w) (the first stage when it has the trained size), and only the stages after it run;
    ``return_stages`` then starts with ``image``.
    """
    recipe = recipe or Recipe()
    stages = recipe.stages(trained_size(unet), (height, width), size_multiple(unet))
    results: list[torch.Tensor] = []
    if image is not None:
        if image.ndim != 4 or image.shape[1] != unet.config.in_channels or not torch.isfinite(image).all():
            raise ValueError(f"image must be a finite (B, {unet.config.in_channels}, H, W) tensor in [-1, 1]; "
                             f"got shape {tuple(image.shape)}")
        results, stages, noise = [image.to(unet.dtype).clamp(-1, 1)], stages_after(stages, image.shape[-2:]), None
    check_sample_args(unet, steps, class_labels, noise, (num_images, unet.config.in_channels, *stages[0].size))
    upsamplers = load_upsamplers(recipe.upsamplers, unet) if recipe.upsamplers is not None else None
    if noise is None and not results:
        noise = initial_noise(num_images, unet.config.in_channels, *stages[0].size, seed, noise_size)
    generator = torch.Generator().manual_seed(seed + 1)
    for stage in stages:
        if stage.index == 0:
            x, start, stage_steps, pivot = noise.to(unet.dtype), 0, steps, None
        else:
            pivot = upsample_pivot(PixelCodec(), results[-1], stage.size, recipe.cascade)
            stage_steps = recipe.cascade.stage_steps(steps)
            start = restart_index(stage_steps, recipe.cascade.strength)
            x = torch.randn(pivot.shape, generator=generator).to(pivot)  # the stage's ε, noised below
        with stage_modifications(unet, recipe, stage, scheduler, upsamplers=upsamplers, pivot=results[-1] if results else None):
            detail = stage_detail(recipe.cascade, results[-1], stage.size, scheduler) if pivot is not None else None
            x = denoise(unet, scheduler, x, stage_steps, start, pivot=pivot, detail=detail, class_labels=class_labels,
                        generator=generator, noise_size=noise_size if stage.index == 0 else None,
                        desc=f"stage {stage.index + 1}/{stages[-1].index + 1} {stage.size[0]}x{stage.size[1]}", progress=progress)
        results.append(x.clamp(-1, 1))
    return results if return_stages else results[-1]


def denoise(unet, scheduler, x: torch.Tensor, steps: int, start: int, *, pivot: Optional[torch.Tensor],
            detail, class_labels, generator: torch.Generator, noise_size, desc: str, progress: bool) -> torch.Tensor:
    """The diffusers loop (``scale_model_input`` → UNet → ``step``) from step index ``start`` of ``steps``.

    ``start = 0``: ``x`` is the initial noise, scaled by ``init_noise_sigma``. Otherwise ``x`` is the
    stage's ε and the loop starts from ``add_noise(pivot, ε, t_K)``; ``detail`` (or ``None``) blends
    the sample with the pivot noised to t by the same ε before every UNet call (FreeScale's detail control).
    The scheduler's state is reset by ``set_timesteps``; multistep schedulers are told where they begin.
    """
    from tqdm.auto import tqdm

    scheduler.set_timesteps(steps)
    begin = start * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    if pivot is None:
        x = x * scheduler.init_noise_sigma
    else:
        eps = x
        x = scheduler.add_noise(pivot, eps, timesteps[:1])
    step_params = inspect.signature(scheduler.step).parameters
    takes_step_noise = "variance_noise" in step_params  # resolution-consistent per-step noise (unused by deterministic ones)
    fixed_step_kwargs = {"generator": generator} if "generator" in step_params else {}  # DDPM, Euler a draw their own
    for t in tqdm(timesteps, desc=desc, disable=not progress, leave=False):
        if detail is not None:
            x = detail(x, scheduler.add_noise(pivot, eps, t.reshape(1)), t)
        model_in = scheduler.scale_model_input(x, t)
        pred = unet(model_in, t.float().expand(x.shape[0]), class_labels=class_labels).sample
        step_kwargs = ({"variance_noise": consistent_noise(generator, x.shape, noise_size).to(x)}
                       if takes_step_noise else fixed_step_kwargs)
        x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
    return x


def to_pil(images: torch.Tensor):
    """(B, 3, H, W) tensors in [-1, 1] → list of PIL RGB images."""
    from PIL import Image

    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
