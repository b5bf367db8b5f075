"""``hiresdiff.upscale``: an existing image as the first stage of a cascade.

The image stands in for the result of the cascade's stage of its size (the trained size, usually), and
only the later stages run: φ (resize, or VAE round trip), re-noise to the restart step K with one ε,
denoise K → 0 at the larger size with the recipe's per-call parts — Self-Cascade's or FreeScale's later
stages, with Upsample Guidance if the recipe composes it. Both drivers do the work
(:func:`hiresdiff.loading.pixel_model.sample` and :func:`hiresdiff.sampling.generate.generate`
with ``image=`` and ``init_image=``); this module turns a user's image into their input and picks the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

from hiresdiff.checks import is_real
from hiresdiff.core.prediction import prediction_target
from hiresdiff.core.resample import downsample
from hiresdiff.defaults import MAX_UPSCALE
from hiresdiff.denoisers.registry import size_multiple, trained_size
from hiresdiff.loading.pixel_model import sample, to_pil
from hiresdiff.recipe import Recipe, as_recipe, stages_after
from hiresdiff.sampling.generate import generate

DEFAULT_RECIPE = "self-cascade"


def rgb_array(image) -> np.ndarray:
    """A PIL image as (H, W, 3) float32 in [0, 1], as a user has it: transparency composited on white (the
    background the embedded model knows), 16- and 32-bit modes scaled by their range, grayscale and palette
    images converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNGs: their full range, not clipped at 255
        gray = np.asarray(image, dtype=np.float32) / (65535.0 if image.mode.startswith("I;16") else 2.0**31 - 1)
        return np.repeat(gray.clip(0, 1)[..., None], 3, axis=-1)
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32)
        if gray.min() < 0 or gray.max() > 1:
            raise ValueError(f"image: a float (mode F) image must lie in [0, 1]; got [{gray.min():g}, {gray.max():g}]")
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def image_tensor(image) -> torch.Tensor:
    """The images a user has → (B, 3, H, W) float32 in [-1, 1]:

    * a PIL image or a list of equally sized ones (any mode, see :func:`rgb_array`);
    * a numpy array (H, W, 3|4) or (B, H, W, 3|4): uint8 in [0, 255], uint16 in [0, 65535], or float in [0, 1];
    * a torch tensor (3, H, W) or (B, 3, H, W), float in [-1, 1] (diffusers' convention).

    ``ValueError`` naming ``image`` for another type, shape or range.
    """
    if isinstance(image, torch.Tensor):
        x = image.float() if image.ndim == 4 else image.float().unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"image: a tensor must be (3, H, W) or (B, 3, H, W); got shape {tuple(image.shape)}")
        if not torch.isfinite(x).all() or x.min() < -1.001 or x.max() > 1.001:
            raise ValueError(
                f"image: a tensor must be finite and in [-1, 1]; got [{float(x.min()):g}, {float(x.max()):g}] "
                "(for an image in [0, 1] pass 2·x − 1)"
            )
        return x.clamp(-1, 1)
    if isinstance(image, np.ndarray):
        return image_tensor(torch.from_numpy(_unit_range(image)).movedim(-1, -3) * 2 - 1)
    images = image if isinstance(image, (list, tuple)) else [image]
    if not images or not all(isinstance(im, Image.Image) for im in images):
        raise ValueError(
            f"image must be a PIL image, a list of them, a numpy array or a torch tensor; got {type(image).__name__}"
        )
    arrays = [rgb_array(im) for im in images]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"image: all images must have one size; got {sorted({a.shape[:2] for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) * 2 - 1


def _unit_range(array: np.ndarray) -> np.ndarray:
    """A numpy image (…, H, W, 3|4) as float32 RGB in [0, 1] (alpha composited on white),
    or ``ValueError`` naming it."""
    if array.ndim not in (3, 4) or array.shape[-1] not in (3, 4):
        raise ValueError(f"image: a numpy array must be (H, W, 3|4) or (B, H, W, 3|4); got shape {array.shape}")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        unit = array.astype(np.float32) / np.iinfo(array.dtype).max
    elif np.issubdtype(array.dtype, np.floating):
        unit = array.astype(np.float32)
        if not np.isfinite(unit).all() or unit.min() < 0 or unit.max() > 1:
            raise ValueError(f"image: a float numpy array must be in [0, 1]; got [{unit.min():g}, {unit.max():g}]")
    else:
        raise ValueError(f"image: a numpy array must be uint8, uint16 or float; got {array.dtype}")
    if unit.shape[-1] == 4:
        alpha = unit[..., 3:]
        unit = unit[..., :3] * alpha + (1 - alpha)
    return unit


def target_size(height: int, width: int, scale: Union[float, Sequence[float]]) -> tuple[int, int]:
    """(height·s_h, width·s_w); ``ValueError`` naming ``scale`` unless it is > 1 and gives whole pixels."""

    def number(v):
        return is_real(v)

    if number(scale):
        sh = sw = scale
    elif isinstance(scale, (tuple, list)) and len(scale) == 2 and all(number(v) for v in scale):
        sh, sw = scale
    else:
        raise ValueError(f"scale must be a number or a (height, width) pair of numbers; got {scale!r}")
    if not (sh >= 1 and sw >= 1 and sh * sw > 1) or (height * sh) % 1 or (width * sw) % 1:
        raise ValueError(
            f"scale must be > 1 (per axis >= 1) and give whole pixels for a {height}x{width} image; got {scale!r}"
        )
    return int(height * sh), int(width * sw)


def check_upscalable(
    trained: Sequence[int], multiple: int, recipe: Recipe, image_size: Sequence[int], target: Sequence[int]
) -> None:
    """``ValueError`` naming the image, before any model loads, unless the cascade of a pixel model trained at
    ``trained`` (sizes multiples of ``multiple``) passes through ``image_size`` on its way to ``target`` and
    ``target`` is at most ``MAX_UPSCALE`` × the trained size (the sizes that would work are in the message)."""
    h0, w0 = trained
    if max(target[0] / h0, target[1] / w0) > MAX_UPSCALE:
        fitting = [s.size for s in recipe.stages((h0, w0), (MAX_UPSCALE * h0, MAX_UPSCALE * w0), multiple)[:-1]]
        raise ValueError(
            f"image {image_size[0]}x{image_size[1]} → {target[0]}x{target[1]} is beyond {MAX_UPSCALE}× the "
            f"model's trained size {h0}x{w0}: give an image of one of {fitting} (the trained size or a "
            "cascade stage), or a smaller scale"
        )
    stages_after(recipe.stages((h0, w0), tuple(target), multiple), tuple(image_size))


@torch.no_grad()
def likely_class_labels(unet, scheduler, images: torch.Tensor, seed: int = 0, draws: int = 8) -> torch.Tensor:
    """The class a class-conditional pixel UNet finds most likely for each image: the lowest denoising error
    ‖ε̂(x_t, t, c) − ε‖² over ``draws`` (t, ε) pairs shared by all classes (a diffusion classifier,
    Li et al. 2023, eq. 5 with equal class priors). ``images`` in [-1, 1], block-averaged to the trained size
    first if larger (the model knows classes at its own size; the cost stays that of the trained size)."""
    generator = torch.Generator().manual_seed(seed)  # noise drawn on the CPU, then moved: one seed, one answer
    num_classes, batch, device = unet.config.num_class_embeds, len(images), unet.device
    images = images.to(device=device, dtype=torch.float32)
    h0, w0 = trained_size(unet)
    if images.shape[-2] > h0 and images.shape[-2] % h0 == 0 and images.shape[-1] % w0 == 0:
        images = downsample(images, (images.shape[-2] // h0, images.shape[-1] // w0))
    alphas = scheduler.alphas_cumprod.float()
    t = torch.linspace(0.1, 0.6, draws).mul(len(alphas)).long()  # mid noise levels decide the class
    labels = torch.arange(num_classes, device=device).repeat(batch)
    errors = torch.zeros(batch, num_classes, device=device)
    for k in range(draws):
        noise = torch.randn(images.shape, generator=generator).to(device)
        a = alphas[t[k]]
        x_t = (a.sqrt() * images + (1 - a).sqrt() * noise).repeat_interleave(num_classes, 0)
        pred = unet(x_t.to(unet.dtype), t[k].to(device).expand(len(x_t)), class_labels=labels).sample.float()
        target = prediction_target(images, noise, a, scheduler.config.prediction_type).repeat_interleave(num_classes, 0)
        errors += (pred - target).pow(2).mean(dim=(1, 2, 3)).view(batch, num_classes)
    return errors.argmin(dim=1)


def upscale(
    model,
    image,
    *,
    scale: Union[float, Sequence[float]] = 2,
    recipe: Optional[Recipe] = None,
    scheduler=None,
    prompt=None,
    steps: int = 20,
    seed: int = 0,
    class_labels=None,
    progress: bool = True,
    **pipeline_kwargs,
) -> list:
    """Upscale ``image`` by ``scale`` with ``model`` and a cascade ``recipe``; return PIL images.

    Args:
        model: a pixel-space ``UNet2DModel`` (give its ``scheduler``) or a diffusers pipeline (SD 1.x/2.x, SDXL;
            ``prompt`` and any pipeline argument in ``pipeline_kwargs``).
        image: a PIL image (pipelines: exactly one), a list of them, or a (B, 3, H, W) tensor in [-1, 1], at a
            size the cascade passes through: the model's trained size, or a later stage's.
        scale: the factor (or (s_h, s_w)) from the image to the output.
        recipe: a recipe with a cascade, or its preset name (default ``"self-cascade"``); FreeScale's, with UG, …
        class_labels: for a class-conditional UNet; default the class the model finds most likely for
            each image (:func:`likely_class_labels`).

    Raises:
        ValueError: before any sampling, naming the argument: a recipe without a cascade, a bad scale, an
            image whose size is no stage of the cascade, a pipeline given several images.
    """
    recipe = as_recipe(recipe if recipe is not None else DEFAULT_RECIPE)
    if recipe.cascade is None:
        raise ValueError(
            f"recipe must have a cascade to upscale an image (self-cascade, freescale, …); got {recipe.name!r}"
        )
    pixels = image_tensor(image)
    height, width = target_size(*pixels.shape[-2:], scale)
    if hasattr(model, "down_blocks"):  # a bare pixel-space UNet
        unet = model
        if scheduler is None:
            raise ValueError("scheduler is required when model is a bare UNet (e.g. the one load_pixel_model returns)")
        check_upscalable(trained_size(unet), size_multiple(unet), recipe, pixels.shape[-2:], (height, width))
        if unet.config.num_class_embeds is not None and class_labels is None:
            class_labels = likely_class_labels(unet, scheduler, pixels.to(unet.device), seed)
        out = sample(
            unet,
            scheduler,
            height=height,
            width=width,
            image=pixels.to(unet.device),
            seed=seed,
            steps=steps,
            class_labels=class_labels,
            recipe=recipe,
            progress=progress,
        )
        return to_pil(out)

    if len(pixels) != 1:
        raise ValueError(f"image: a pipeline upscales one image at a time; got {len(pixels)}")
    return generate(
        model,
        prompt,
        height=height,
        width=width,
        recipe=recipe,
        seed=seed,
        steps=steps,
        init_image=pixels,
        **pipeline_kwargs,
    )
