"""Comparison grids: the same seed through several methods, one column per (size, method).

The pixel-space comparison (the CLI's main job on the embedded model) draws one resolution-consistent
noise at the largest size and block-averages it down, so row i shows the same sample in every column.
The trained-size sample is made once: every cascade whose first stage is the trained size upscales it
(``image=``), instead of sampling it again. The pipeline comparison calls
:func:`hiresdiff.sampling.generate.generate` once per method with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

import torch

from hiresdiff.checks import check_positive_int, check_scales
from hiresdiff.defaults import COMPARISON_METHODS, DEFAULT_SCHEDULER, DEFAULT_STEPS, check_max_pixels
from hiresdiff.denoisers.registry import find_denoiser, size_multiple, trained_size, vae_factor
from hiresdiff.loading.pixel_model import load_pixel_model, sample, to_pil
from hiresdiff.models import EMBEDDED_MODEL_DIR, shipped_upsamplers
from hiresdiff.options import MethodOptions, recipes_for
from hiresdiff.recipe import Recipe
from hiresdiff.sampling.generate import generate


def seeded_class_labels(unet, num_images: int, seed: int) -> Optional[torch.Tensor]:
    """Uniformly drawn class labels for a class-conditional UNet (``None`` otherwise), fixed by ``seed``."""
    if unet.config.num_class_embeds is None:
        return None
    return torch.randint(unet.config.num_class_embeds, (num_images,), generator=torch.Generator().manual_seed(seed))


def scaled_size(trained: Sequence[int], scale: float) -> tuple[int, int]:
    """``trained`` (h, w) × ``scale``; ``ValueError`` naming ``scale`` unless that gives whole pixels."""
    h, w = (n * scale for n in trained)
    if h % 1 or w % 1:
        raise ValueError(f"scale {scale:g} of the trained size {trained[0]}x{trained[1]} is no whole number of pixels")
    return int(h), int(w)


def check_recipes_make(recipes: dict, trained: Sequence[int], sizes: Sequence[Sequence[int]], multiple: int) -> None:
    """Before any sampling: every recipe can make every size, or ``ValueError`` saying which method and why."""
    for method, recipe in recipes.items():
        for height, width in sizes:
            try:
                recipe.stages(tuple(trained), (height, width), multiple)
            except ValueError as error:
                raise ValueError(f"method {method} cannot make {height}x{width}: {error}") from None


def column_label(height: int, width: int, method: str, recipe: Recipe) -> str:
    size = f"{height}²" if height == width else f"{height}x{width}"
    options = []
    if recipe.ug is not None:
        options.append(f"θ={recipe.ug.theta:g}")
    if recipe.upsamplers is not None:
        options.append("tuned")
    return " ".join([size, method, *options])


def comparison(
    model: Union[str, Path, None] = None,
    *,
    scales: Sequence[float] = (2,),
    size: Optional[Sequence[int]] = None,
    methods: Sequence[str] = COMPARISON_METHODS,
    options: MethodOptions = MethodOptions(),
    seed: int = 0,
    num_images: int = 3,
    steps: int = DEFAULT_STEPS,
    scheduler: str = DEFAULT_SCHEDULER,
    include_trained: bool = True,
    progress: bool = True,
    on_column: Optional[Callable[[str, list], None]] = None,
    max_pixels: Optional[int] = None,
    device: str = "cpu",
    dtype: Optional[torch.dtype] = None,
):
    """Sample the trained size (if ``include_trained``) and every (size, method) pair from the same noise.

    Returns ``(columns, labels)``: ``columns[j]`` is a list of ``num_images`` PIL images.
    ``model`` is a local ``UNet2DModel`` folder; ``None`` uses the embedded emoji model, whose Self-Cascade
    is the tuned one (its shipped upsamplers) unless ``options.upsamplers == "none"``. Target sizes are
    ``scales`` × the trained size, or one ``size`` (height, width). ``on_column(label, images)`` is called as
    each column finishes. Names, options and sizes are checked before any sampling (sizes above ``max_pixels``
    are refused, naming ``--max-pixels``). The model runs on ``device`` in ``dtype`` (default fp32).
    """
    recipes = recipes_for(methods, options, shipped_upsamplers(model))
    if size is None:
        check_scales(scales)
    check_positive_int(num_images, "num_images")
    unet, sched = load_pixel_model(model or EMBEDDED_MODEL_DIR, scheduler, device, dtype or torch.float32)
    h, w = trained_size(unet)
    sizes = [tuple(size)] if size is not None else [scaled_size((h, w), s) for s in scales]
    if max_pixels is not None:
        for height, width in sizes:
            check_max_pixels(height, width, max_pixels)
    check_recipes_make(recipes, (h, w), sizes, size_multiple(unet))
    # the first column is the image the cascades start from: the trained size, or for another aspect ratio the
    # largest size of that aspect inside it (the cascades' stage 0)
    starts = {
        recipe.stages((h, w), target, size_multiple(unet))[0].size
        for recipe in recipes.values()
        if recipe.cascade is not None
        for target in sizes
    }
    base = starts.pop() if len(starts) == 1 else (h, w)
    largest = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    noise_size = largest if largest[0] % base[0] == 0 and largest[1] % base[1] == 0 else None
    labels = seeded_class_labels(unet, num_images, seed)
    common = dict(num_images=num_images, seed=seed, steps=steps, class_labels=labels, progress=progress)
    trained = sample(unet, sched, height=base[0], width=base[1], noise_size=noise_size, **common)
    columns, names = [], []

    def add(label, images):
        columns.append(to_pil(images))
        names.append(label)
        if on_column is not None:
            on_column(label, columns[-1])

    if include_trained:
        add(f"{base[0]}² trained" if base[0] == base[1] else f"{base[0]}x{base[1]} trained", trained)
    for target in sizes:
        for method, recipe in recipes.items():
            first = recipe.stages((h, w), target, size_multiple(unet))[0].size
            start = (
                dict(image=trained)
                if recipe.cascade is not None and tuple(first) == base
                else dict(noise_size=noise_size)
            )
            images = sample(unet, sched, height=target[0], width=target[1], recipe=recipe, **start, **common)
            add(column_label(*target, method, recipe), images)
    return columns, names


def pipeline_comparison(
    pipe,
    prompt,
    *,
    sizes: Sequence[tuple],
    recipes: dict,
    seed: int = 0,
    steps: int = 30,
    num_frames: Optional[int] = None,
    include_trained: bool = True,
    on_column: Optional[Callable[[str, list], None]] = None,
    **pipeline_kwargs,
):
    """The pipeline's plain call at its trained size (if ``include_trained``: every cascade's stage 0), then one
    column per (size, method) pair, all from the same seed: ``(columns, labels)`` of PIL images (a video's frames
    for video pipelines); ``on_column(label, images)`` is called as each column finishes."""
    columns, labels = [], []

    def add(label, images):
        columns.append(images)
        labels.append(label)
        if on_column is not None:
            on_column(label, images)

    if include_trained:
        factor = vae_factor(pipe)
        h, w = (n * factor for n in trained_size(find_denoiser(pipe)[0], pipe))
        add(
            f"{h}² trained" if h == w else f"{h}x{w} trained",
            generate(pipe, prompt, height=h, width=w, seed=seed, steps=steps, num_frames=num_frames, **pipeline_kwargs),
        )
    for height, width in sizes:
        for method, recipe in recipes.items():
            add(
                column_label(height, width, method, recipe),
                generate(
                    pipe,
                    prompt,
                    height=height,
                    width=width,
                    recipe=recipe,
                    seed=seed,
                    steps=steps,
                    num_frames=num_frames,
                    **pipeline_kwargs,
                ),
            )
    return columns, labels
