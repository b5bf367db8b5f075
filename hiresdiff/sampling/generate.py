"""The one sampling core: any recipe on any diffusers pipeline, a pixel ``UNet2DModel`` being one more pipeline, the
flow-matching transformers of FLUX.1 and SD3/3.5 others (their differences: :mod:`hiresdiff.transformer.layouts`).

``generate(pipe, …)`` runs the recipe's stages (:meth:`hiresdiff.recipe.Recipe.stages`) one after the other,
each as one call of the pipeline itself, which brings everything it already does (prompt encoding, CFG,
SDXL's added conditioning, ControlNet, IP-Adapter, AnimateDiff's motion modules, the VAE decode,
``callback_on_step_end``). Pixel models run through :class:`~hiresdiff.loading.pixel_pipeline.PixelPipeline`,
so the pixel path and the pipeline path are this same code. Per stage:

* stage 0 is the plain call at the trained size (bit for bit ``pipe(…, generator=manual_seed(seed))``),
  ``output_type="latent"`` unless it is the last;
* a later stage r upsamples the previous result (φ: resize, or VAE decode → resize → encode, see
  :mod:`hiresdiff.sampling.codecs`), noises it to the restart step K of its own grid with one ε,
  z_K = a_K·φ(z₀) + b_K·ε in the scheduler's own form (:class:`~hiresdiff.sampling.noise_levels.NoiseLevels`),
  and hands it to the pipeline as ``latents`` with a scheduler that starts at K
  (:mod:`hiresdiff.sampling.restart`: the img2img contract, the caller's scheduler never touched). The
  pipeline multiplies given latents by ``init_noise_sigma``, so they are passed divided by it;
* ε and every per-step noise of stage r come from :func:`~hiresdiff.sampling.restart.stage_generator`
  (seed, r), a CPU generator: the same seed gives the same result under any global RNG and on any device;
* FreeScale's detail control blends the latents after each step through ``callback_on_step_end`` (chained
  before a user's own callback): blending after step i is blending before the UNet call of step i+1, and
  before the first call the blend is the identity (z̃_K = z_K: one ε per stage);
* the per-call parts are attached for the stage by :func:`hiresdiff.sampling.stage_parts.stage_modifications`
  and removed in ``finally``. The pipeline object, its scheduler and its config are never changed, also
  after an exception or an interrupt: every stage runs on a shallow copy of the pipeline with a scheduler
  of its own.

Conditioning images given as tensors at the target's pixel size (a ControlNet's or a T2I-Adapter's ``image``)
are resized to each stage's size (bilinear); PIL images the pipelines resize themselves.

Videos (AnimateDiff) always use latent-space φ, also under ``space="rgb"``: FreeScale's finding is that
the RGB round trip's blur helps images but hurts videos. Pipelines without a VAE resize their images.

SDXL micro-conditioning: in a cascade every stage is told ``original_size = target_size`` = the trained
size (FreeScale's choice: the model is asked for the kind of image it knows, and the cascade makes it
large), unless the caller passes them; UG's low-resolution calls then keep these ids (they are
already those of the trained grid). Without a cascade the pipeline's defaults apply and UG scales them.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any, Callable, Optional

import torch

from hiresdiff.sampling.memory_bounds import memory_bounds
from hiresdiff.sampling.codecs import PixelCodec, VaeCodec, upsample_pivot
from hiresdiff.sampling.noise_levels import NoiseLevels, fresh_copy
from hiresdiff.sampling.restart import RestartedScheduler, stage_generator, stage_pipeline
from hiresdiff.sampling.stage_parts import load_upsamplers, stage_detail, stage_modifications, transformer_positions
from hiresdiff.hooks.families import family_of, find_denoiser, size_multiple
from hiresdiff.hooks.families import trained_size as denoiser_trained_size
from hiresdiff.methods.self_cascade import check_positive_int, resize, restart_index
from hiresdiff.recipe import Recipe, Stage, as_recipe, stages_after

PIPELINE_CONTRACT = ("height", "width", "num_inference_steps", "generator", "latents", "output_type")
FIRST_STAGE_ONLY = ("latents", "noise_size")  # arguments that describe stage 0's start, not every stage's


def generate(pipe, prompt=None, *, height: int, width: int, recipe: Optional[Recipe] = None, seed: int = 0,
             steps: int = 30, num_frames: Optional[int] = None, vae_tiling: Optional[bool] = None,
             on_stage: Optional[Callable[[Stage, Any], None]] = None, init_image: Optional[torch.Tensor] = None,
             return_stages: bool = False, trained_size: Optional[int] = None, **pipeline_kwargs):
    """Generate ``height``×``width`` pixels with ``pipe`` and ``recipe``.

    Before a run on a CUDA device, the working memory it needs is predicted on a meta twin of the pipeline
    (:func:`hiresdiff.cost.plan.fit_warning`), and a warning says so when the device's free memory will not hold it.

    Args:
        pipe: a loaded diffusers pipeline whose denoiser is a supported UNet (SD 1.x/2.x, SDXL, AnimateDiff,
            their ControlNet, T2I-Adapter, IP-Adapter and LoRA variants) or flow-matching transformer
            (``FluxPipeline``, ``StableDiffusion3Pipeline``), or a
            :class:`~hiresdiff.loading.pixel_pipeline.PixelPipeline`.
        prompt: the prompt (also any other pipeline argument in ``pipeline_kwargs``: ``negative_prompt``,
            ``guidance_scale``, ``output_type``, ``callback_on_step_end``, ``image`` of a ControlNet, …;
            ``latents`` and ``noise_size`` apply to stage 0 only).
        recipe: :class:`~hiresdiff.recipe.Recipe` or a preset name (``None``: the pipeline's plain call at that size).
        seed: drives one CPU generator per stage (:func:`~hiresdiff.sampling.restart.stage_generator`).
        steps: sampling steps of stage 0 (later stages: ``cascade.steps`` or these, of which they run
            the last ``int(steps·strength)``).
        num_frames: frames of a video pipeline (AnimateDiff).
        vae_tiling: tile the VAE (the RGB cascade's φ and the output's decode): ``None`` above 1536² pixels.
        on_stage: called as ``on_stage(stage, latents)`` when a stage other than the last finishes.
        init_image: upscale this image (B, 3, h, w) in [-1, 1] instead of generating one: encoded by the VAE,
            it stands in for the result of the cascade's stage of its size, and only the later stages run.
        return_stages: return every stage's output (``init_image``'s encoding first, if given), not only the last;
            the stages before the last as (B, C, h, w) latents (also FLUX's, which its pipeline packs).
        trained_size: the square pixel size the model was trained at, when the pipeline does not know it (FLUX's
            pipeline assumes ``default_sample_size·vae_scale_factor`` = 1024 whatever the weights). Default: the
            denoiser's ``sample_size`` (FLUX: the pipeline's ``default_sample_size``) × the VAE factor.

    Returns:
        The last stage's output: a list of PIL images, or for a video pipeline the frames of the first video
        (``output_type`` as passed, default ``"pil"``); with ``return_stages`` a list of every stage's.

    Raises:
        ValueError: before any UNet call, for an unsupported pipeline, sizes that do not fit the model
            (not divisible by the VAE factor × the UNet's factor, smaller than trained for a cascade, non-integer
            UG scales), a cascade whose later stages would run no step (steps·strength < 1), upsamplers built
            for another UNet.
    """
    recipe = as_recipe(recipe) if recipe is not None else Recipe()
    denoiser, _ = find_denoiser(pipe)
    family = family_of(denoiser)
    parameters = inspect.signature(pipe.__call__).parameters
    missing = [name for name in PIPELINE_CONTRACT if name not in parameters]
    if missing:
        raise ValueError(f"pipe: {type(pipe).__name__} takes no {', '.join(missing)}; hiresdiff needs pipelines that take "
                         f"{', '.join(PIPELINE_CONTRACT)} (for a pixel UNet2DModel: PixelPipeline(unet, scheduler))")
    if recipe.cascade is not None and recipe.cascade.detail_alpha is not None and "callback_on_step_end" not in parameters:
        raise ValueError(f"recipe: detail control (detail_alpha) blends the latents through callback_on_step_end, which "
                         f"{type(pipe).__name__} does not take: use detail_alpha=None (e.g. Recipe.freescale(detail_alpha=None))")
    if family.flow and recipe.upsamplers is not None:
        raise ValueError("upsamplers: Self-Cascade's feature upsamplers plug into UNet skip features; "
                         f"{type(denoiser).__name__} is a transformer: use the tuning-free Self-Cascade (upsamplers=None)")
    if not family.flow and recipe.positions is not None:
        raise ValueError(f"positions: rescales a transformer's position embedding; {type(denoiser).__name__} has none "
                         "(its analogue on a UNet is FreeScale's dilation): use positions=None")
    if family.video and recipe.cascade is not None and recipe.cascade.space == "rgb":
        recipe = dataclasses.replace(recipe, cascade=dataclasses.replace(recipe.cascade, space="latent"))
    vae = getattr(pipe, "vae", None)
    scale_factor = getattr(pipe, "vae_scale_factor", 1) or 1
    multiple = scale_factor * size_multiple(denoiser)
    for name, n in (("height", height), ("width", width)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} (VAE factor {scale_factor} × the "
                             f"{type(denoiser).__name__}'s size factor {multiple // scale_factor}); got {n!r}")
    check_steps(steps)
    trained = _trained_latent_size(denoiser, pipe, trained_size, scale_factor)
    stages = recipe.stages(trained, (height // scale_factor, width // scale_factor), size_multiple(denoiser))
    for stage in stages[1:]:
        stage_steps, strength = recipe.cascade.stage_steps(steps, stage is stages[-1]), recipe.cascade.strength
        if recipe.cascade.steps_run(steps, stage is stages[-1]) < 1:
            raise ValueError(f"steps·strength must be at least 1, or the cascade's later stages run no step; got "
                             f"steps={stage_steps}, strength={strength} (steps·strength = {stage_steps * strength:g})")
    reach = family.layout.position_reach(denoiser) if family.flow else 0
    if reach and transformer_positions(recipe) is None and max(max(stage.size) for stage in stages) > reach:
        raise ValueError(f"height and width: {type(denoiser).__name__}'s position embedding reaches {reach * scale_factor} pixels "
                         f"per side (pos_embed_max_size {denoiser.config.pos_embed_max_size} patches); {height}x{width} needs it "
                         "interpolated: use a recipe with positions=PositionConfig('pi'), or FreeScale (its restrained "
                         "dilation is position interpolation on a transformer)")
    frame_factor = max((level.factor[0] for stage in stages for level in stage.ug_levels
                        if isinstance(level.factor, tuple) and len(level.factor) == 3), default=1)
    if num_frames is not None and num_frames % frame_factor:
        raise ValueError(f"num_frames={num_frames} is not divisible by the UG frame factor {frame_factor}: "
                         f"num_frames must be a multiple of {frame_factor}")
    upsamplers = load_upsamplers(recipe.upsamplers, denoiser, stages) if recipe.upsamplers is not None else {}
    free = free_device_memory(denoiser)
    if free is not None and init_image is None:
        from hiresdiff.cost.plan import fit_warning

        plain = {name: value for name, value in pipeline_kwargs.items()
                 if name != "output_type" and isinstance(value, (str, int, float, bool, type(None)))}
        message = fit_warning(pipe, recipe, height, width, free, prompt=prompt, num_frames=num_frames,
                              trained_size=trained_size, vae_tiling=vae_tiling, **plain)
        if message:
            warnings.warn(message, stacklevel=2)

    common = dict(pipeline_kwargs, num_inference_steps=steps)
    first_only = {name: common.pop(name) for name in FIRST_STAGE_ONLY if common.get(name) is not None}
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
    codec = VaeCodec(vae, scale_factor, vae_tiling) if vae is not None else PixelCodec()
    layout = family.layout

    results, latents = [], None
    if init_image is not None:
        latents, stages = _encoded_image(init_image, denoiser, codec, stages, scale_factor)
        results.append(latents)
    for stage in stages:
        last = stage is stages[-1]
        pixels = (stage.size[0] * scale_factor, stage.size[1] * scale_factor)
        call = dict(_at_size(common, (height, width), pixels), height=pixels[0], width=pixels[1],
                    output_type=output_type if last else "latent", generator=stage_generator(seed, stage.index))
        if user_callback is not None:
            call["callback_on_step_end"] = user_callback
        if stage.index == 0:
            call.update(first_only)
            scheduler = fresh_copy(pipe.scheduler)
            inner = scheduler
        else:
            scheduler = _restart(pipe.scheduler, recipe, stage, latents, codec, call,
                                 recipe.cascade.stage_steps(steps, last), layout, size_multiple(denoiser), trained)
            inner = scheduler.inner
        with stage_modifications(denoiser, recipe, stage, inner, upsamplers=upsamplers.get(int(max(stage.scale))), pivot=latents,
                                 sdxl_time_ids=time_ids, trained_size=trained), \
                memory_bounds(denoiser, vae if last else None, vae_tiling, pixels):
            output = stage_pipeline(pipe, scheduler)(**call)
        result = output.frames if hasattr(output, "frames") else output.images
        if not last and layout is not None:
            result = layout.to_grid(result, stage.size)
        results.append(result)
        if not last:
            latents = result
            if on_stage is not None:
                on_stage(stage, latents)
    if return_stages:
        return results
    return result[0] if hasattr(output, "frames") else result


def free_device_memory(denoiser) -> Optional[int]:
    """Bytes free on the denoiser's CUDA device (``None`` elsewhere: CPU memory is the system's to manage)."""
    device = next(denoiser.parameters()).device
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def _at_size(arguments: dict, target, size) -> dict:
    """``arguments`` with every image tensor (B, C, H, W) of the target's pixel size (a ControlNet's or an adapter's
    conditioning image, also in a list) resized to ``size``, the stage's: conditioning follows the stage."""
    def resized(value):
        if isinstance(value, torch.Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == tuple(target):
            return value if tuple(size) == tuple(target) else resize(value, size, "bilinear")
        return value

    return {name: [resized(v) for v in value] if isinstance(value, list) else resized(value)
            for name, value in arguments.items()}


def check_steps(steps) -> None:
    """``ValueError`` naming ``steps`` unless it is a positive int."""
    check_positive_int(steps, "steps")


def _encoded_image(image: torch.Tensor, denoiser, codec, stages: list, scale_factor: int):
    """The model-space version of a user's ``image`` and the stages after the one it stands in for."""
    if family_of(denoiser).video:
        raise ValueError("init_image: upscaling takes images; video pipelines (AnimateDiff) are not supported")
    channels = 3 if isinstance(codec, VaeCodec) else denoiser.config.in_channels
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != channels or not torch.isfinite(image).all():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"init_image must be a finite (B, {channels}, H, W) tensor in [-1, 1]; got {shape}")
    h, w = image.shape[-2:]
    if h % scale_factor or w % scale_factor:
        raise ValueError(f"init_image size {h}x{w} must be a multiple of the VAE factor {scale_factor}")
    later = stages_after(stages, (h // scale_factor, w // scale_factor))
    return codec.encode(image.clamp(-1, 1).to(device=denoiser.device, dtype=denoiser.dtype)), later


def _trained_latent_size(denoiser, pipe, trained_size: Optional[int], scale_factor: int) -> tuple[int, int]:
    """The trained size in the denoiser's units: ``trained_size`` pixels if given, else the denoiser's own."""
    if trained_size is None:
        return denoiser_trained_size(denoiser, pipe)
    if not isinstance(trained_size, int) or isinstance(trained_size, bool) or trained_size < 1 or trained_size % scale_factor:
        raise ValueError(f"trained_size must be a positive multiple of the VAE factor {scale_factor} (pixels); "
                         f"got {trained_size!r}")
    return (trained_size // scale_factor,) * 2


def _restart(pipe_scheduler, recipe: Recipe, stage: Stage, previous: torch.Tensor, codec, call: dict,
             steps: int, layout=None, multiple: int = 1, trained=None) -> RestartedScheduler:
    """Prepare ``call`` for a later stage (its start latents z_K, its detail control); return its scheduler. ``steps``
    is the stage's full schedule length (``CascadeConfig.stage_steps``), of which it runs the last ``int(steps·strength)``.

    A flow transformer's stage samples the grid its pipeline would choose at the stage's size (FLUX: μ from the
    stage's token count) or, with ``cascade.flow_shift="trained"``, at the ``trained`` size; computed here
    (``layout.timestep_arguments``) so that σ_K is known before the call, and imposed on the pipeline's
    ``set_timesteps`` by the restarted scheduler."""
    cascade = recipe.cascade
    pivot = upsample_pivot(codec, previous, stage.size, cascade)
    eps = torch.randn(pivot.shape, generator=call["generator"]).to(pivot)  # drawn on the CPU, then moved
    shift_size = trained if cascade.flow_shift == "trained" else stage.size
    grid = {} if layout is None else layout.timestep_arguments(
        pipe_scheduler, steps, (shift_size[0] // multiple) * (shift_size[1] // multiple))
    scheduler = RestartedScheduler(pipe_scheduler, restart_index(steps, cascade.strength), grid)
    scheduler.set_timesteps(steps)  # init_noise_sigma of the grid the pipeline will set
    levels = NoiseLevels.of(scheduler.inner, steps, grid)
    start = levels.noised(pivot, eps, scheduler.begin) / getattr(scheduler.inner, "init_noise_sigma", 1.0)  # flow: 1
    call.update(num_inference_steps=steps, latents=start if layout is None else layout.from_grid(start))
    detail = stage_detail(cascade, codec.decode(previous) if callable(cascade.detail_alpha) else None, stage.size,
                          levels.num_train_timesteps)
    if detail is not None:
        call["callback_on_step_end"] = _detail_callback(detail, pivot, eps, levels, scheduler.begin,
                                                        call.get("callback_on_step_end"), layout)
    return scheduler


def _detail_callback(detail, pivot, eps, levels: NoiseLevels, begin: int, user_callback, layout=None):
    """``callback_on_step_end`` blending the latents toward the pivot noised to the next grid step (same ε)."""

    def callback(pipe, i, t, callback_kwargs):
        index = begin + i + 1
        if index < len(levels):
            latents = callback_kwargs["latents"]
            grid = latents if layout is None else layout.to_grid(latents, pivot.shape[-2:])
            blended = detail(grid, levels.noised(pivot, eps, index), levels.timesteps[index])
            callback_kwargs["latents"] = blended if layout is None else layout.from_grid(blended)
        if user_callback is not None:
            callback_kwargs = {**callback_kwargs, **(user_callback(pipe, i, t, callback_kwargs) or {})}
        return callback_kwargs

    return callback
