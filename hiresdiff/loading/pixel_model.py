"""Sampling pixel-space diffusers ``UNet2DModel`` checkpoints at the trained size or larger, with any recipe.

Runs at any size start from one resolution-consistent noise: the noise is drawn at the largest size
asked for and block-averaged down (``√k·D[noise]``, docs/architecture.md, "Consistent noise and Upsample Guidance"),
so the same seed gives paired
samples across resolutions. A stochastic scheduler that takes its per-step noise as an argument
(``variance_noise``: SDE-DPM-Solver++) gets it the same way; DDPM and Euler a draw it from a seeded
generator at the sample's own size, so their pairs share only the start.
The UNet runs as one more diffusers pipeline (:class:`~hiresdiff.loading.pixel_pipeline.PixelPipeline`)
through the one sampling core, :func:`hiresdiff.sampling.generate.generate`: the same stage
loop, restart and per-call parts as SD, SDXL and AnimateDiff pipelines, for every scheduler.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from hiresdiff.checks import cannot_load
from hiresdiff.core.noise import consistent_noise
from hiresdiff.denoisers.registry import size_multiple, trained_size
from hiresdiff.loading.pixel_pipeline import PixelPipeline
from hiresdiff.recipe import Recipe, as_recipe
from hiresdiff.sampling.generate import generate
from hiresdiff.sampling.restart import stage_generator
from hiresdiff.sampling.run_plan import check_steps
from hiresdiff.sampling.schedulers import make_scheduler


def pixel_model_config(path: Union[str, Path]) -> tuple[Path, dict]:
    """(the UNet's folder, its config) of a local ``UNet2DModel`` folder (or a pipeline folder with ``unet/``), read
    as JSON without loading diffusers; ``FileNotFoundError`` / ``ValueError`` naming the path otherwise."""
    path = Path(path)
    unet_dir = path / "unet" if (path / "unet" / "config.json").exists() else path
    if not (unet_dir / "config.json").exists():
        raise FileNotFoundError(
            f"model path {str(path)!r} has no config.json: expected a local UNet2DModel folder (save_pretrained)"
        )
    try:
        config = json.loads((unet_dir / "config.json").read_text())
    except ValueError:
        raise ValueError(f"model path {str(path)!r}: {unet_dir / 'config.json'} is not valid JSON") from None
    class_name = config.get("_class_name") if isinstance(config, dict) else None
    if class_name != "UNet2DModel":
        raise ValueError(
            f"model path {str(path)!r} holds a {class_name!r}; hiresdiff's pixel sampler needs a UNet2DModel"
        )
    return unet_dir, config


def load_pixel_model(
    path: Union[str, Path], scheduler: str = "ddim", device: str = "cpu", dtype: torch.dtype = torch.float32
):
    """Load a local ``UNet2DModel`` folder on ``device`` in ``dtype`` (default: the CPU in fp32, which these small
    models need no more than) and a scheduler of kind ``scheduler`` for it.

    The training schedule is read from ``scheduler_config.json`` in the folder (or its ``scheduler/``
    subfolder); without one, diffusers' DDPM defaults are used.
    """
    path = Path(path)
    unet_dir, _ = pixel_model_config(path)
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, dtype=dtype).to(device).eval()
    except Exception as error:  # a truncated or foreign weights file: one line naming the folder, not a traceback
        raise cannot_load("model path", path, error) from None
    for folder in (unet_dir, path, path / "scheduler"):
        if (folder / "scheduler_config.json").exists():
            base = DDPMScheduler.load_config(folder)
            break
    else:
        base = DDPMScheduler().config
    return unet, make_scheduler(scheduler, base)


def initial_noise(
    num_images: int, channels: int, height: int, width: int, seed: int, noise_size: Optional[Sequence[int]] = None
) -> torch.Tensor:
    """Standard normal noise of shape (num_images, channels, height, width) for ``seed``: the first draw of
    stage 0's generator, i.e. exactly the initial noise :func:`sample` starts from for that seed.

    With ``noise_size`` = (H', W'), an integer multiple of (height, width), the draw is made at H'×W'
    and reduced by ``√k·D`` so that every size from one seed shares its noise.
    """
    return consistent_noise(stage_generator(seed, 0), (num_images, channels, height, width), noise_size)


def check_sample_args(
    unet, class_labels: Optional[torch.Tensor], noise: Optional[torch.Tensor], shape: Sequence[int]
) -> None:
    """Raise ``ValueError`` naming the argument before any UNet call: class labels, noise."""
    if (class_labels is None) != (unet.config.num_class_embeds is None):
        raise ValueError("class_labels must be given exactly when the UNet is class-conditional (num_class_embeds set)")
    if class_labels is not None:
        labels = torch.as_tensor(class_labels)
        if labels.shape != (shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"class_labels must be {shape[0]} integer labels, one per image; got shape {tuple(labels.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= unet.config.num_class_embeds):
            raise ValueError(
                f"class_labels must lie in [0, {unet.config.num_class_embeds - 1}]; got "
                f"{int(labels.min())} … {int(labels.max())}"
            )
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise must have shape {tuple(shape)} (the first stage's); got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or infinite values")


@torch.no_grad()
def sample(
    unet,
    scheduler,
    *,
    height: int,
    width: int,
    num_images: int = 1,
    seed: int = 0,
    steps: int = 25,
    class_labels: Optional[torch.Tensor] = None,
    recipe: Optional[Recipe] = None,
    return_stages: bool = False,
    noise: Optional[torch.Tensor] = None,
    noise_size: Optional[Sequence[int]] = None,
    image: Optional[torch.Tensor] = None,
    progress: bool = True,
) -> Union[torch.Tensor, list[torch.Tensor]]:
    """Sample ``num_images`` images of ``height``×``width`` in [-1, 1] with ``recipe`` (``None``: plain sampling).

    The pixel UNet runs as a :class:`~hiresdiff.loading.pixel_pipeline.PixelPipeline` through the one
    sampling core, :func:`hiresdiff.sampling.generate.generate`: the first stage is plain sampling
    of its size from the seed's noise (``noise`` (B, C, h, w) replaces that draw); every later stage resizes
    the previous result to its size, noises it to the restart step K with one draw ε and denoises K → 0 with
    the stage's per-call parts attached. ``return_stages=True`` returns every stage's result, the first being
    exactly ``sample(…)`` at the trained size for the same seed and ``noise_size``.

    ``noise_size`` draws the first stage's noise (the initial one, and the per-step noise of schedulers
    that take ``variance_noise``) at a larger size and reduces it (:func:`initial_noise`), so that samples
    of one seed at different sizes are paired. ``class_labels`` (B,) for class-conditional UNets.

    ``image`` (B, C, h, w) in [-1, 1] upscales an existing image: it stands in for the result of the stage
    of size (h, w) (the first stage when it has the trained size), and only the stages after it run;
    ``return_stages`` then starts with ``image``.
    """
    check_steps(steps)
    recipe = as_recipe(recipe) if recipe is not None else Recipe()
    first = recipe.stages(trained_size(unet), (height, width), size_multiple(unet))[0]
    batch = len(image) if image is not None else num_images
    check_sample_args(unet, class_labels, noise, (batch, unet.config.in_channels, *first.size))
    pipe = PixelPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    kwargs = {"latents": noise, "noise_size": noise_size, "class_labels": class_labels}
    stages = generate(
        pipe,
        height=height,
        width=width,
        recipe=recipe,
        seed=seed,
        steps=steps,
        init_image=image,
        num_images_per_prompt=batch,
        output_type="latent",
        return_stages=True,
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    return stages if return_stages else stages[-1]


def to_pil(images: torch.Tensor):
    """(B, 3, H, W) tensors in [-1, 1] → list of PIL RGB images."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
