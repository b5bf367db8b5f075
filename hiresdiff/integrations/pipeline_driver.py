"""``hiresdiff.generate(pipe, …)``: any recipe on a diffusers text-to-image or text-to-video pipeline.

The driver reuses the pipeline for everything it already does (prompt encoding, CFG, SDXL's added
conditioning, AnimateDiff's motion modules, the VAE decode, ``callback_on_step_end``) and adds only
what a cascade needs between the pipeline's own calls:

* stage 0 is the pipeline's plain call at the trained size with ``output_type="latent"``;
* a later stage upsamples the previous latents (φ: resize, or VAE decode → resize → encode, see
  :mod:`hiresdiff.integrations.codecs`), noises them to the restart step K with one ε by the scheduler's
  own ``add_noise`` and hands them to the pipeline as ``latents``. The pipeline starts at step K because,
  for the duration of that call only, the scheduler's ``set_timesteps`` is followed by dropping the
  first K steps and ``set_begin_index(K)`` — what diffusers' img2img pipelines do, applied to the
  text-to-image pipelines, which all take ``latents`` but not a start step. (Custom ``timesteps=`` would
  need scheduler support that DDIM, Euler a and UniPC lack; the img2img variants would draw ε themselves.)
  The pipeline multiplies given latents by ``init_noise_sigma``, so they are passed divided by it.
* FreeScale's detail control blends the latents after each step, through ``callback_on_step_end``
  (chained before a user's own callback): blending after step i is blending before the UNet call of
  step i+1, and before the first call the blend is the identity (z̃_K = z_K: one ε per stage).
* the per-call parts are attached for each stage by :func:`hiresdiff.integrations.stage.stage_modifications`
  and removed in ``finally``; the scheduler's ``set_timesteps`` is restored there too. After a run, also
  a failed or interrupted one, the pipeline is as it was (its scheduler's step state aside, which every
  pipeline call resets).

Videos (AnimateDiff) always use latent-space φ, also under ``space="rgb"``: FreeScale's finding is that
the RGB round trip's blur helps images but hurts videos.

SDXL micro-conditioning: in a cascade every stage is told ``original_size = target_size`` = the trained
size (FreeScale's choice: the model is asked for the kind of image it knows, and the cascade makes it
large), unless the caller passes them; UG's low-resolution calls then keep these ids (they are
already those of the trained grid). Without a cascade the pipeline's defaults apply and UG scales them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

import torch

from hiresdiff.integrations.codecs import VaeCodec, upsample_pivot
from hiresdiff.integrations.stage import load_upsamplers, stage_detail, stage_modifications
from hiresdiff.integrations.unet_families import family_of, find_unet, size_multiple, trained_size
from hiresdiff.methods.self_cascade import restart_index
from hiresdiff.recipe import Recipe, Stage, stages_after


def generate(pipe, prompt=None, *, height: int, width: int, recipe: Optional[Recipe] = None, seed: int = 0,
             steps: int = 30, num_frames: Optional[int] = None, vae_tiling: Optional[bool] = None,
             on_stage: Optional[Callable[[Stage, Any], None]] = None, image: Optional[torch.Tensor] = None,
             **pipeline_kwargs):
    """Generate ``height``×``width`` pixels with ``pipe`` (SD 1.x/2.x, SDXL, AnimateDiff) and ``recipe``.

    Args:
        pipe: a loaded diffusers pipeline whose denoiser is a supported UNet.
        prompt: the prompt (also any other pipeline argument in ``pipeline_kwargs``: ``negative_prompt``,
            ``guidance_scale``, ``output_type``, ``callback_on_step_end``, …).
        recipe: :class:`~hiresdiff.recipe.Recipe` (``None``: the pipeline's plain call at that size).
        seed: drives CPU generators (stage 0's pipeline noise, then each later stage's ε), so a seed
            gives the same result on every device.
        steps: sampling steps of stage 0 (later stages: ``cascade.steps`` or these, of which they run
            the last ``int(steps·strength)``).
        num_frames: frames of a video pipeline (AnimateDiff).
        vae_tiling: tile the VAE in the RGB cascade's φ: ``None`` above 2048² pixels.
        on_stage: called as ``on_stage(stage, latents)`` when a stage other than the last finishes.
        image: upscale this image (1, 3, h, w) in [-1, 1] instead of generating one: encoded by the VAE, it
            stands in for the result of the cascade's stage of its size, and only the later stages run.

    Returns:
        The last stage's output: a list of PIL images, or for a video pipeline the frames of the first video
        (``output_type`` as passed, default ``"pil"``).

    Raises:
        ValueError: before any UNet call, for an unsupported pipeline, sizes that do not fit the model
            (not divisible by the VAE factor × the UNet's factor, smaller than trained for a cascade, non-integer
            UG scales), ``space="rgb"`` without a VAE, upsamplers built for another UNet.
    """
    recipe = recipe or Recipe()
    unet, _ = find_unet(pipe)
    if family_of(unet).video and recipe.cascade is not None and recipe.cascade.space == "rgb":
        recipe = dataclasses.replace(recipe, cascade=dataclasses.replace(recipe.cascade, space="latent"))
    vae = getattr(pipe, "vae", None)
    scale_factor = getattr(pipe, "vae_scale_factor", 1) or 1
    multiple = scale_factor * size_multiple(unet)
    for name, n in (("height", height), ("width", width)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} (VAE factor {scale_factor} × the UNet's "
                             f"downsampling factor {multiple // scale_factor}); got {n!r}")
    stages = recipe.stages(trained_size(unet), (height // scale_factor, width // scale_factor), size_multiple(unet))
    if recipe.cascade is not None and recipe.cascade.space == "rgb" and vae is None:
        raise ValueError(f"space='rgb' needs a VAE, and {type(pipe).__name__} has none: use space='latent'")
    frame_factor = max((level.factor[0] for stage in stages for level in stage.ug_levels
                        if isinstance(level.factor, tuple) and len(level.factor) == 3), default=1)
    if num_frames is not None and num_frames % frame_factor:
        raise ValueError(f"num_frames={num_frames} is not divisible by the UG frame factor {frame_factor}: "
                         f"num_frames must be a multiple of {frame_factor}")
    upsamplers = load_upsamplers(recipe.upsamplers, unet) if recipe.upsamplers is not None else None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")

    parameters = inspect.signature(pipe.__call__).parameters
    common = dict(pipeline_kwargs, num_inference_steps=steps)
    if prompt is not None:
        common["prompt"] = prompt
    if num_frames is not None:
        common["num_frames"] = num_frames
    time_ids = "scale"
    if recipe.cascade is not None and "original_size" in parameters:
        base = (stages[0].size[0] * scale_factor, stages[0].size[1] * scale_factor)
        common.setdefault("original_size", base)
        common.setdefault("target_size", base)
        time_ids = "keep"
    output_type = common.pop("output_type", "pil")
    user_callback = common.pop("callback_on_step_end", None)
    codec = VaeCodec(vae, scale_factor, vae_tiling) if vae is not None else None

    latents = None
    if image is not None:
        latents, stages = _encoded_image(image, unet, codec, stages, scale_factor)
    for stage in stages:
        last = stage is stages[-1]
        call = dict(common, height=stage.size[0] * scale_factor, width=stage.size[1] * scale_factor,
                    output_type=output_type if last else "latent")
        if user_callback is not None:
            call["callback_on_step_end"] = user_callback
        with stage_modifications(unet, recipe, stage, pipe.scheduler, upsamplers=upsamplers, pivot=latents,
                                 sdxl_time_ids=time_ids):
            if stage.index == 0:
                output = pipe(**call, generator=torch.Generator("cpu").manual_seed(seed))
            else:
                output = _restarted_call(pipe, recipe, stage, latents, codec, call, seed, steps)
        result = output.frames if hasattr(output, "frames") else output.images
        if not last:
            latents = result
            if on_stage is not None:
                on_stage(stage, latents)
    return result[0] if hasattr(output, "frames") else result


def _encoded_image(image: torch.Tensor, unet, codec, stages: list, scale_factor: int):
    """The VAE latents of a user's ``image`` and the stages after the one they stand in for."""
    if family_of(unet).video:
        raise ValueError("image: upscaling takes images; video pipelines (AnimateDiff) are not supported")
    if codec is None:
        raise ValueError("image: upscaling with a pipeline needs its VAE")
    if image.ndim != 4 or image.shape[:2] != (1, 3) or not torch.isfinite(image).all():
        raise ValueError(f"image must be one finite (1, 3, H, W) tensor in [-1, 1]; got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if h % scale_factor or w % scale_factor:
        raise ValueError(f"image size {h}x{w} must be a multiple of the VAE factor {scale_factor}")
    later = stages_after(stages, (h // scale_factor, w // scale_factor))
    return codec.encode(image.clamp(-1, 1).to(device=unet.device, dtype=unet.dtype)), later


def _restarted_call(pipe, recipe: Recipe, stage: Stage, previous: torch.Tensor, codec, call: dict, seed: int,
                    steps: int):
    """One later stage: the pipeline's call started at step K from the noised, upsampled pivot."""
    cascade, scheduler = recipe.cascade, pipe.scheduler
    pivot = upsample_pivot(codec, previous, stage.size, cascade)
    eps = torch.randn(pivot.shape, generator=torch.Generator("cpu").manual_seed(seed + stage.index)).to(pivot)
    stage_steps = cascade.stage_steps(steps)
    begin = restart_index(stage_steps, cascade.strength) * scheduler.order
    set_timesteps = scheduler.set_timesteps

    def restarted_set_timesteps(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)

    scheduler.set_timesteps = restarted_set_timesteps
    try:
        scheduler.set_timesteps(stage_steps, device=pivot.device)
        timesteps = scheduler.timesteps
        z_k = scheduler.add_noise(pivot, eps, timesteps[:1])
        call.update(num_inference_steps=stage_steps, latents=z_k / scheduler.init_noise_sigma)
        detail = stage_detail(cascade, codec.decode(previous) if callable(cascade.detail_alpha) else None,
                              stage.size, scheduler)
        if detail is not None:
            call["callback_on_step_end"] = _detail_callback(detail, pivot, eps, timesteps, scheduler,
                                                            call.get("callback_on_step_end"))
        return pipe(**call)
    finally:
        del scheduler.set_timesteps


def _detail_callback(detail, pivot, eps, timesteps, scheduler, user_callback):
    """``callback_on_step_end`` blending the latents toward the pivot noised to the next step's t."""

    def callback(pipe, i, t, callback_kwargs):
        if i + 1 < len(timesteps):
            t_next = timesteps[i + 1]
            latents = callback_kwargs["latents"]
            callback_kwargs["latents"] = detail(latents, scheduler.add_noise(pivot, eps, t_next.reshape(1)), t_next)
        if user_callback is not None:
            callback_kwargs = {**callback_kwargs, **(user_callback(pipe, i, t, callback_kwargs) or {})}
        return callback_kwargs

    return callback
