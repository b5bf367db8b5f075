"""The one sampling core: any recipe on any diffusers pipeline, a pixel ``UNet2DModel`` being one more pipeline, the
flow-matching transformers of FLUX.1 and SD3/3.5 others (their differences: :mod:`hiresdiff.denoisers.layouts`).

``generate(pipe, …)`` is a validated plan and a short loop: :func:`hiresdiff.sampling.run_plan.plan_run` turns the
call into a :class:`~hiresdiff.sampling.run_plan.RunPlan` before any model call, and :func:`run` runs the recipe's
stages (:meth:`hiresdiff.recipe.Recipe.stages`) one after the other,
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
  pipeline multiplies given latents by ``init_noise_sigma``, so they are passed divided by it. With
  ``cascade.inversion`` the ε is the one implied by φ(z₀)'s inversion to step K, which the pipeline runs first
  (:mod:`hiresdiff.sampling.inversion`), mixed with the fresh draw; the stage's parts are attached for both calls;
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

Videos (AnimateDiff, Wan) use latent-space φ by default (``space="family"``, the presets'): FreeScale's finding is
that the RGB round trip's blur helps images but hurts videos; ``space="rgb"`` given explicitly decodes the clip,
resizes its frames and encodes it again. Pipelines without a VAE resize their images.

SDXL micro-conditioning: in a cascade every stage is told ``original_size = target_size`` = the trained
size (FreeScale's choice: the model is asked for the kind of image it knows, and the cascade makes it
large), unless the caller passes them; UG's low-resolution calls then keep these ids (they are
already those of the trained grid). Without a cascade the pipeline's defaults apply and UG scales them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Optional, Union

import torch

from hiresdiff.core.noise import frame_shared_noise
from hiresdiff.denoisers.layouts import StageGrid
from hiresdiff.denoisers.registry import find_denoiser, size_multiple
from hiresdiff.hooks.call_context import scheduler_clock
from hiresdiff.methods.flow_shift import degenerate_steps, is_degenerate
from hiresdiff.methods.self_cascade import implied_noise, injected_noise, resize
from hiresdiff.recipe import Recipe, Stage
from hiresdiff.sampling.codecs import PixelCodec, VaeCodec, upsample_pivot
from hiresdiff.sampling.frame_noise import share_initial_noise
from hiresdiff.sampling.inversion import InvertingScheduler
from hiresdiff.sampling.memory_bounds import memory_bounds
from hiresdiff.sampling.noise_levels import NoiseLevels, fresh_copy
from hiresdiff.sampling.restart import RestartedScheduler, stage_generator, stage_pipeline
from hiresdiff.sampling.run_plan import RunPlan, StagePlan, plan_run
from hiresdiff.sampling.stage_lora import stage_lora
from hiresdiff.sampling.stage_parts import load_upsamplers, stage_detail, stage_modifications


def generate(
    pipe,
    prompt=None,
    *,
    height: int,
    width: int,
    recipe: Optional[Recipe] = None,
    seed: int = 0,
    steps: int = 30,
    num_frames: Optional[int] = None,
    vae_tiling: Optional[bool] = None,
    on_stage: Optional[Callable[[Stage, Any], None]] = None,
    init_image: Optional[torch.Tensor] = None,
    return_stages: bool = False,
    trained_size: Union[int, tuple[int, int], None] = None,
    shift=None,
    frame_noise_share: float = 0.0,
    **pipeline_kwargs,
):
    """Generate ``height``×``width`` pixels with ``pipe`` and ``recipe``: :func:`~hiresdiff.sampling.run_plan.plan_run`
    validates the call into a plan before any model call, then :func:`run` executes it stage by stage.

    To know beforehand whether a CUDA device holds the run, ask :func:`hiresdiff.cost.plan.fit_warning` (the CLI does).

    Args:
        pipe: a loaded diffusers pipeline whose denoiser is a supported UNet (SD 1.x/2.x, SDXL, AnimateDiff,
            their ControlNet, T2I-Adapter, IP-Adapter and LoRA variants) or flow-matching transformer
            (``FluxPipeline``, ``QwenImagePipeline``, ``StableDiffusion3Pipeline``, ``WanPipeline``), or a
            :class:`~hiresdiff.loading.pixel_pipeline.PixelPipeline`.
        prompt: the prompt (also any other pipeline argument in ``pipeline_kwargs``: ``negative_prompt``,
            ``guidance_scale``, ``output_type``, ``callback_on_step_end``, ``image`` of a ControlNet, …;
            ``latents`` and ``noise_size`` apply to stage 0 only).
        recipe: :class:`~hiresdiff.recipe.Recipe` or a preset name (``None``: the pipeline's plain call at that size).
        seed: drives one CPU generator per stage (:func:`~hiresdiff.sampling.restart.stage_generator`).
        steps: sampling steps of stage 0 (later stages: ``cascade.steps`` or these, of which they run
            the last ``int(steps·strength)``).
        num_frames: frames of a video pipeline (AnimateDiff; Wan: 4k + 1).
        vae_tiling: tile the VAE (the RGB cascade's φ and the output's decode): ``None`` above 1536² pixels.
        on_stage: called as ``on_stage(stage, latents)`` when a stage other than the last finishes.
        init_image: upscale this image (B, 3, h, w) in [-1, 1] instead of generating one: encoded by the VAE,
            it stands in for the result of the cascade's stage of its size, and only the later stages run.
        return_stages: return every stage's output (``init_image``'s encoding first, if given), not only the last;
            the stages before the last as (B, C, h, w) latents (also FLUX's, which its pipeline packs).
        trained_size: the pixel size the model was trained at (a side, or (height, width): Wan 2.2 TI2V-5B's
            704×1280), when the pipeline does not know it (FLUX's
            pipeline assumes ``default_sample_size·vae_scale_factor`` = 1024 whatever the weights). Default: the
            denoiser's ``sample_size`` (FLUX: the pipeline's ``default_sample_size``) × the VAE factor;
            :meth:`hiresdiff.models.ModelSettings.arguments` passes a shipped model's.
        shift: a flow model's σ-grid shift at every stage (:mod:`hiresdiff.methods.flow_shift`): ``"trained"``
            (the trained size's), ``"pipeline"`` (the pipeline's own at the stage's size: FLUX's extrapolates),
            ``"resolution"`` (SD3's √(pixel ratio) rule) or a number (a fixed shift); ``None``:
            :data:`~hiresdiff.methods.flow_shift.DEFAULT_SHIFT`. A stage whose grid has more than half of its steps
            above σ 0.95 warns.
        frame_noise_share: a video's initial (and restart) noise correlated between frames by this much (PYoCo's
            mixed prior, :mod:`hiresdiff.sampling.frame_noise`), for a model trained with it: emoji-video's
            ``hiresdiff.json`` names its own (:meth:`hiresdiff.models.ModelSettings.arguments` passes it);
            0: independent.

    Returns:
        The last stage's output: a list of PIL images, or for a video pipeline the frames of the first video
        (``output_type`` as passed, default ``"pil"``); with ``return_stages`` a list of every stage's.

    Raises:
        ValueError: before any denoiser call, for everything :func:`~hiresdiff.sampling.run_plan.plan_run` refuses
            and for upsamplers built for another UNet.
    """
    plan = plan_run(
        pipe,
        prompt,
        height=height,
        width=width,
        recipe=recipe,
        seed=seed,
        steps=steps,
        num_frames=num_frames,
        init_image=init_image,
        trained_size=trained_size,
        shift=shift,
        frame_noise_share=frame_noise_share,
        **pipeline_kwargs,
    )
    return run(pipe, plan, vae_tiling=vae_tiling, on_stage=on_stage, init_image=init_image, return_stages=return_stages)


def run(
    pipe,
    plan: RunPlan,
    *,
    vae_tiling: Optional[bool] = None,
    on_stage: Optional[Callable[[Stage, Any], None]] = None,
    init_image: Optional[torch.Tensor] = None,
    return_stages: bool = False,
):
    """Execute a :class:`~hiresdiff.sampling.run_plan.RunPlan` of ``pipe`` (arguments as :func:`generate`'s)."""
    recipe = plan.recipe
    denoiser, _ = find_denoiser(pipe)
    upsamplers = (
        load_upsamplers(recipe.upsamplers, denoiser, [s.stage for s in plan.stages])
        if recipe.upsamplers is not None
        else {}
    )
    vae = getattr(pipe, "vae", None)
    codec = VaeCodec(vae, plan.scale_factor, vae_tiling) if vae is not None else PixelCodec()
    layout = plan.family.layout

    results, latents = [], None
    if init_image is not None:
        latents = codec.encode(init_image.clamp(-1, 1).to(device=denoiser.device, dtype=denoiser.dtype))
        results.append(latents)
    for planned in plan.stages:
        stage, last = planned.stage, planned is plan.stages[-1]
        call = dict(
            _at_size(plan.call, (plan.height, plan.width), planned.pixels),
            height=planned.pixels[0],
            width=planned.pixels[1],
            output_type=plan.output_type if last else "latent",
            generator=stage_generator(plan.seed, stage.index),
        )
        if plan.user_callback is not None:
            call["callback_on_step_end"] = plan.user_callback
        grid = None if layout is None else _stage_grid(pipe.scheduler, plan, planned, size_multiple(denoiser))
        if stage.index == 0:
            call.update(plan.first_only, num_inference_steps=planned.steps)  # fewer than the call's: shared_steps
            scheduler = fresh_copy(pipe.scheduler) if grid is None else RestartedScheduler(pipe.scheduler, 0, grid)
        else:
            scheduler = RestartedScheduler(plan.stage_scheduler or pipe.scheduler, planned.restart, grid)
            scheduler.set_timesteps(planned.steps)  # its grid and init_noise_sigma, before the parts read them
        inner = getattr(scheduler, "inner", scheduler)
        with (
            stage_lora(pipe, recipe.cascade.stage_lora if stage.index > 0 else None),
            stage_modifications(
                denoiser,
                recipe,
                stage,
                inner,
                upsamplers=upsamplers.get(int(max(stage.scale))),
                pivot=latents,
                sdxl_time_ids=plan.time_ids,
                trained_size=plan.trained,
            ),
            memory_bounds(denoiser, vae if last else None, vae_tiling, planned.pixels),
        ):
            staged = stage_pipeline(pipe, scheduler)
            if stage.index > 0:
                _restart(pipe, scheduler, plan, planned, latents, codec, call, grid)
            elif plan.frame_noise_share and "latents" not in call:
                share_initial_noise(staged, plan.frame_noise_share)
            output = staged(**call)
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


def _at_size(arguments: dict, target, size) -> dict:
    """``arguments`` with every image tensor (B, C, H, W) of the target's pixel size (a ControlNet's or an adapter's
    conditioning image, also in a list) resized to ``size``, the stage's: conditioning follows the stage."""

    def resized(value):
        if isinstance(value, torch.Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == tuple(target):
            return value if tuple(size) == tuple(target) else resize(value, size, "bilinear")
        return value

    return {
        name: [resized(v) for v in value] if isinstance(value, list) else resized(value)
        for name, value in arguments.items()
    }


def _stage_grid(pipe_scheduler, plan: RunPlan, planned: StagePlan, multiple: int) -> StageGrid:
    """A flow stage's σ grid under the plan's shift policy (computed here, so that every σ of the stage is known
    before the call, and imposed on the pipeline's ``set_timesteps`` by the restarted scheduler); warns, naming
    ``shift``, when more than half of its steps start above σ 0.95."""
    size, (h0, w0) = planned.stage.size, plan.trained
    tokens, trained_tokens = (size[0] // multiple) * (size[1] // multiple), (h0 // multiple) * (w0 // multiple)
    grid = plan.family.layout.stage_grid(pipe_scheduler, planned.steps, tokens, trained_tokens, plan.shift)
    levels = NoiseLevels.of(pipe_scheduler, planned.steps, grid)
    sigmas = (levels.noise / (levels.noise + levels.signal))[:: getattr(pipe_scheduler, "order", 1) or 1]
    if is_degenerate(sigmas):
        remedy = "shift='trained' or a small number" if plan.shift == "pipeline" else "a smaller number, e.g. shift=3"
        warnings.warn(
            f"the {planned.pixels[0]}x{planned.pixels[1]} stage's σ grid (shift={plan.shift!r}) starts "
            f"{degenerate_steps(sigmas)} of its {len(sigmas)} steps above σ 0.95: they denoise nearly pure noise. "
            f"Pass {remedy} (--shift in the CLI)",
            stacklevel=4,
        )
    return grid


def _restart(
    pipe,
    scheduler: RestartedScheduler,
    plan: RunPlan,
    planned: StagePlan,
    previous: torch.Tensor,
    codec,
    call: dict,
    grid: Optional[StageGrid] = None,
) -> None:
    """Prepare ``call`` for a later stage (its start latents z_K, its detail control), sampled by ``scheduler`` (its
    plan's schedule of ``planned.steps`` from the restart index ``planned.restart``; a flow stage on ``grid``,
    :func:`_stage_grid`). With ``cascade.inversion`` the start's noise comes from the pivot's inversion, run through
    ``pipe`` (:func:`_inversion_noise`); else it is a fresh draw, shared between a clip's frames by the plan's
    ``frame_noise_share``."""
    recipe, flow, layout = plan.recipe, plan.family.flow, plan.family.layout
    cascade, stage, steps = recipe.cascade, planned.stage, planned.steps
    pivot = upsample_pivot(codec, previous, stage.size, cascade)
    eps = torch.randn(pivot.shape, generator=call["generator"]).to(pivot)  # drawn on the CPU, then moved
    if plan.frame_noise_share:
        eps = frame_shared_noise(eps, plan.frame_noise_share, frame_dim=2)
    levels = NoiseLevels.of(scheduler.inner, steps, grid)
    call["num_inference_steps"] = steps
    if cascade.inversion is not None:
        inverted = _inversion_noise(pipe, scheduler, levels, pivot, call, flow, layout)
        eps = injected_noise(inverted, eps.float(), cascade.inversion).to(pivot)
    start = levels.noised(pivot, eps, scheduler.begin) / getattr(scheduler.inner, "init_noise_sigma", 1.0)  # flow: 1
    call["latents"] = start if layout is None else layout.from_grid(start)
    detail = stage_detail(cascade, codec.decode(previous) if callable(cascade.detail_alpha) else None, stage.size)
    if detail is not None:
        clock = scheduler_clock(lambda: scheduler.inner, levels.num_train_timesteps)
        call["callback_on_step_end"] = _detail_callback(
            detail, pivot, eps, levels, clock, scheduler.begin, call.get("callback_on_step_end"), layout
        )


def _inversion_noise(pipe, scheduler: RestartedScheduler, levels: NoiseLevels, pivot, call: dict, flow: bool, layout):
    """The noise that takes ``pivot`` to its inversion at the restart step: the pipeline called as the stage will be
    (its conditioning, guidance and parts) with an :class:`~hiresdiff.sampling.inversion.InvertingScheduler` over the
    stage's grid, from the clean pivot; no callback (they are the denoising steps')."""
    inverting = InvertingScheduler(scheduler, levels, flow)
    arguments = {**call, "latents": pivot if layout is None else layout.from_grid(pivot), "output_type": "latent"}
    arguments.pop("callback_on_step_end", None)
    stage_pipeline(pipe, inverting)(**arguments)
    inverted = inverting.state if layout is None else layout.to_grid(inverting.state, pivot.shape[-2:])
    return implied_noise(inverted, pivot, *levels.at(scheduler.begin))


def _detail_callback(detail, pivot, eps, levels: NoiseLevels, clock, begin: int, user_callback, layout=None):
    """``callback_on_step_end`` blending the latents toward the pivot noised to the next grid step (same ε), with the
    weight of that step's fraction on ``clock``."""

    def callback(pipe, i, t, callback_kwargs):
        index = begin + i + 1
        if index < len(levels):
            latents = callback_kwargs["latents"]
            grid = latents if layout is None else layout.to_grid(latents, pivot.shape[-2:])
            blended = detail(grid, levels.noised(pivot, eps, index), float(clock(levels.timesteps[index])))
            callback_kwargs["latents"] = blended if layout is None else layout.from_grid(blended)
        if user_callback is not None:
            callback_kwargs = {**callback_kwargs, **(user_callback(pipe, i, t, callback_kwargs) or {})}
        return callback_kwargs

    return callback
