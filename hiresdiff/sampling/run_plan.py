"""The plan of one :func:`~hiresdiff.sampling.generate.generate` call: everything the stage loop will do, built from the
call and validated before any model call.

:func:`plan_run` reads the pipeline's signature and its denoiser's config (never its weights) and returns a
:class:`RunPlan`: the recipe as it will run (a video's RGB cascade made latent), the stages with their sizes, the
steps each runs and its restart index, the micro-conditioning policy and the arguments every stage's call shares.
Every bad input is refused here by a ``ValueError`` naming the parameter, so a run that starts can finish. The cost
model (:mod:`hiresdiff.cost.plan`) reads the same plan for its per-stage table.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from hiresdiff.checks import check_positive_int, check_shift, is_int
from hiresdiff.denoisers.layouts import WanLayout
from hiresdiff.denoisers.registry import DenoiserFamily, family_of, find_denoiser, size_multiple, vae_factor
from hiresdiff.denoisers.registry import trained_size as denoiser_trained_size
from hiresdiff.methods.flow_shift import DEFAULT_SHIFT, Shift
from hiresdiff.methods.self_cascade import restart_index
from hiresdiff.recipe import Recipe, Stage, as_recipe, stages_after
from hiresdiff.transformer.parts import transformer_positions

PIPELINE_CONTRACT = ("height", "width", "num_inference_steps", "generator", "latents", "output_type")
FIRST_STAGE_ONLY = ("latents", "noise_size")  # arguments that describe stage 0's start, not every stage's


@dataclass(frozen=True)
class StagePlan:
    """One stage as it will run: the recipe's ``stage``, its size in ``pixels``, the length ``steps`` of its schedule
    and the step ``restart`` it starts at (0 for stage 0; later stages run ``steps − restart`` steps,
    :meth:`~hiresdiff.methods.self_cascade.CascadeConfig.steps_run`)."""

    stage: Stage
    pixels: tuple[int, int]
    steps: int
    restart: int = 0

    @property
    def steps_run(self) -> int:
        return self.steps - self.restart

    @property
    def index(self) -> int:
        return self.stage.index


@dataclass(frozen=True)
class RunPlan:
    """A validated :func:`~hiresdiff.sampling.generate.generate` call (see the module docstring).

    ``stages`` are those that run: after an ``init_image`` only the later ones. ``trained`` is the trained size in the
    denoiser's units. ``call`` holds the arguments every stage's pipeline call shares, ``first_only`` those of stage 0
    alone (``latents``, ``noise_size``). ``time_ids`` is SDXL's micro-conditioning of UG's low-resolution calls:
    ``"keep"`` in a cascade (every stage is told the trained size), else ``"scale"``.
    """

    recipe: Recipe
    family: DenoiserFamily
    height: int
    width: int
    scale_factor: int
    multiple: int
    trained: tuple[int, int]
    stages: tuple[StagePlan, ...]
    seed: int
    steps: int
    output_type: Any = "pil"
    time_ids: str = "scale"
    call: dict = field(default_factory=dict)
    first_only: dict = field(default_factory=dict)
    user_callback: Optional[Callable] = None
    init_size: Optional[tuple[int, int]] = None  # the init_image's size in the denoiser's units, when one is given
    shift: Optional[Shift] = None  # a flow model's shift policy (hiresdiff.methods.flow_shift); None for UNets
    stage_scheduler: Any = None  # the later stages' scheduler instance; None: the pipeline's
    frame_noise_share: float = 0.0  # a clip's noise correlation between frames (hiresdiff.sampling.frame_noise)


def check_steps(steps) -> None:
    """``ValueError`` naming ``steps`` unless it is a positive int."""
    check_positive_int(steps, "steps")


def plan_run(
    pipe,
    prompt=None,
    *,
    height: int,
    width: int,
    recipe=None,
    seed: int = 0,
    steps: int = 30,
    num_frames: Optional[int] = None,
    init_image: Optional[torch.Tensor] = None,
    trained_size: Union[int, tuple[int, int], None] = None,
    shift: Optional[Shift] = None,
    frame_noise_share: float = 0.0,
    **pipeline_kwargs,
) -> RunPlan:
    """The :class:`RunPlan` of ``generate(pipe, prompt, height=…, …)`` (the same arguments, see there), validated.

    Raises:
        ValueError: for an unsupported pipeline, sizes that do not fit the model (not divisible by the VAE factor ×
            the denoiser's factor, smaller than trained for a cascade, non-integer UG scales, beyond an SD3
            position table without rescaling), parts the denoiser cannot take, frames not divisible by temporal
            UG's factor, a malformed ``init_image``, a ``shift`` that is not a policy or a number > 0, or given for a
            model that is not a flow transformer, a ``frame_noise_share`` outside [0, 1] or without frames. (A
            cascade whose later stages would run no step, steps·strength < 1, runs one step of a longer grid and
            warns.)
    """
    recipe = as_recipe(recipe) if recipe is not None else Recipe()
    check_shift(shift)
    _check_frame_noise_share(frame_noise_share, num_frames)
    denoiser, _ = find_denoiser(pipe)
    family = family_of(denoiser)
    if shift is not None and not family.flow:
        raise ValueError(
            f"shift: shifts a flow-matching model's σ grid (FLUX, SD3); {type(denoiser).__name__} samples on its "
            "training schedule: leave shift=None"
        )
    parameters = inspect.signature(pipe.__call__).parameters
    _check_pipeline(pipe, parameters, recipe, family, denoiser)
    stage_scheduler = _stage_scheduler(pipe, recipe, family, denoiser)
    recipe = recipe.for_family(family.flow, family.video)
    scale_factor = vae_factor(pipe)
    multiple = scale_factor * size_multiple(denoiser)
    for name, n in (("height", height), ("width", width)):
        if not is_int(n) or n < 1 or n % multiple:
            raise ValueError(
                f"{name} must be a positive multiple of {multiple} (VAE factor {scale_factor} × the "
                f"{type(denoiser).__name__}'s size factor {multiple // scale_factor}); got {n!r}"
            )
    check_steps(steps)
    trained = _trained_latent_size(denoiser, pipe, trained_size, scale_factor)
    target = (height // scale_factor, width // scale_factor)
    stages = recipe.stages(trained, target, size_multiple(denoiser))
    if recipe.cascade is not None and recipe.cascade.shared_steps and len(stages) > steps:
        recipe = _fewer_stages(recipe, stages, steps)
        stages = recipe.stages(trained, target, size_multiple(denoiser))
    planned = _stage_plans(recipe, stages, steps, scale_factor)
    _check_positions(denoiser, family, recipe, stages, scale_factor, height, width)
    _check_frames(stages, num_frames, getattr(pipe, "vae_scale_factor_temporal", None) if family.video else None)
    init_size = None
    if init_image is not None:
        init_size = _check_init_image(init_image, denoiser, family, pipe, scale_factor)
        later = stages_after(stages, init_size)
        planned = planned[len(stages) - len(later) :]

    call = dict(pipeline_kwargs, num_inference_steps=steps)
    first_only = {name: call.pop(name) for name in FIRST_STAGE_ONLY if call.get(name) is not None}
    if prompt is not None:
        call["prompt"] = prompt
    if num_frames is not None:
        call["num_frames"] = num_frames
    time_ids = "scale"
    if recipe.cascade is not None and "original_size" in parameters:
        base = (stages[0].size[0] * scale_factor, stages[0].size[1] * scale_factor)
        call.setdefault("original_size", base)
        call.setdefault("target_size", base)
        time_ids = "keep"
    output_type = call.pop("output_type", "pil")
    user_callback = call.pop("callback_on_step_end", None)
    return RunPlan(
        recipe,
        family,
        height,
        width,
        scale_factor,
        multiple,
        trained,
        tuple(planned),
        seed,
        steps,
        output_type,
        time_ids,
        call,
        first_only,
        user_callback,
        init_size,
        (DEFAULT_SHIFT if shift is None else shift) if family.flow else None,
        stage_scheduler,
        float(frame_noise_share),
    )


def _check_frame_noise_share(share, num_frames: Optional[int]) -> None:
    """``ValueError`` naming ``frame_noise_share`` unless it is a number in [0, 1], and 0 for a call without
    ``num_frames`` (an image has no frames to share noise between)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"frame_noise_share must be a number in [0, 1]; got {share!r}")
    if share and num_frames is None:
        raise ValueError(
            f"frame_noise_share={share!r} correlates a clip's noise between its frames: give num_frames (a video "
            "pipeline), or leave it 0"
        )


def _fewer_stages(recipe: Recipe, stages, steps: int) -> Recipe:
    """A ``shared_steps`` cascade with more stages than ``steps``: one jump from the trained size to the target
    (two stages), or with one step plain sampling at the target (the per-call parts kept); warns which."""
    if steps == 1:
        warnings.warn(
            f"steps=1 cannot share one denoiser call among {len(stages)} stages: plain sampling at the target "
            "(the recipe's per-call parts kept) instead of the cascade",
            stacklevel=3,
        )
        return dataclasses.replace(recipe, cascade=None, upsamplers=None)
    warnings.warn(
        f"steps={steps} cannot give each of the cascade's {len(stages)} stages a step: it jumps from the trained size "
        "to the target in one stage instead",
        stacklevel=3,
    )
    jump = dataclasses.replace(recipe.cascade, stage_ratio=float(max(stages[-1].scale)))
    return dataclasses.replace(recipe, cascade=jump)


def _stage_plans(recipe: Recipe, stages, steps: int, scale_factor: int) -> list[StagePlan]:
    """Every stage's plan: stage 0 samples the call's ``steps`` — with ``shared_steps``, what the later stages
    leave of them, each of those running at most ⌊⌊steps/2⌋ / their number⌋ steps (at least one)."""
    shared = recipe.cascade is not None and recipe.cascade.shared_steps
    most = max(1, (steps // 2) // (len(stages) - 1)) if shared and len(stages) > 1 else None
    later = [_stage_plan(recipe, stage, stage is stages[-1], steps, scale_factor, most) for stage in stages[1:]]
    first = steps - sum(plan.steps_run for plan in later) if shared else steps
    pixels = (stages[0].size[0] * scale_factor, stages[0].size[1] * scale_factor)
    return [StagePlan(stages[0], pixels, first), *later]


def _stage_plan(
    recipe: Recipe, stage: Stage, last: bool, steps: int, scale_factor: int, most: Optional[int] = None
) -> StagePlan:
    """A later stage's plan: the last int(N·strength) steps of its grid of N steps, at most ``most`` of them (its
    grid shortened to ⌈most/strength⌉). A later stage whose grid leaves it no step (N·strength < 1, a few-step call)
    samples instead the last step of a grid of ⌈1/strength⌉ steps, its restart as near the strength's step fraction
    as one step gets, and says so (a warning naming ``steps`` and ``strength``)."""
    pixels = (stage.size[0] * scale_factor, stage.size[1] * scale_factor)
    cascade = recipe.cascade
    grid = cascade.stage_steps(steps, last)
    if most is not None and cascade.steps_run(steps, last) > most:
        grid = math.ceil(most / cascade.strength - 1e-9)
    elif cascade.steps_run(steps, last) < 1:
        longer = math.ceil(1 / cascade.strength - 1e-9)
        warnings.warn(
            f"steps={grid} × strength {cascade.strength:g} < 1 leaves the cascade's later stages no step: each runs "
            f"the last step of a {longer}-step grid instead (a restart at step fraction {(longer - 1) / longer:.2f})",
            stacklevel=4,
        )
        grid = longer
    return StagePlan(stage, pixels, grid, restart_index(grid, cascade.strength))


def _check_pipeline(pipe, parameters, recipe: Recipe, family: DenoiserFamily, denoiser) -> None:
    """``ValueError`` for a pipeline that lacks the call arguments the core needs, or parts its denoiser cannot take."""
    missing = [name for name in PIPELINE_CONTRACT if name not in parameters]
    if missing:
        raise ValueError(
            f"pipe: {type(pipe).__name__} takes no {', '.join(missing)}; hiresdiff needs pipelines that take "
            f"{', '.join(PIPELINE_CONTRACT)} (for a pixel UNet2DModel: PixelPipeline(unet, scheduler))"
        )
    if (
        recipe.cascade is not None
        and recipe.cascade.detail_alpha is not None
        and "callback_on_step_end" not in parameters
    ):
        raise ValueError(
            f"recipe: detail control (detail_alpha) blends the latents through callback_on_step_end, which "
            f"{type(pipe).__name__} does not take: use detail_alpha=None (e.g. Recipe.freescale(detail_alpha=None))"
        )
    if recipe.cascade is not None and recipe.cascade.inversion is not None and "sigma_data" in pipe.scheduler.config:
        raise ValueError(
            f"inversion: {type(pipe.scheduler).__name__} preconditions the model's output (EDM), which the inversion "
            "does not read: use inversion=None (a restart from fresh noise) or a VP, σ-form or flow scheduler"
        )
    parallel = getattr(denoiser, "_parallel_config", None) is not None
    whole_grid = (recipe.positions, recipe.dilation, recipe.fusion)  # dilation: position interpolation on a transformer
    if parallel and any(part is not None for part in whole_grid):
        raise ValueError(
            f"recipe: {type(denoiser).__name__} runs with context parallelism (enable_parallelism), which splits its "
            "tokens across devices; position rescaling and scale fusion act on the whole token grid and are not "
            "verified under it: use Upsample Guidance and cascades without them, e.g. "
            "Recipe.freescale(dilation=False, fusion=False), 'self-cascade', 'ug'"
        )
    conditioned = isinstance(family.layout, WanLayout) and denoiser.config.in_channels != denoiser.config.out_channels
    if recipe.ug is not None and conditioned:
        raise ValueError(
            f"recipe: {type(denoiser).__name__} takes conditioning channels beside its latents (in_channels "
            f"{denoiser.config.in_channels}, out_channels {denoiser.config.out_channels}: Wan 2.1 image-to-video), "
            "which Upsample Guidance does not resample: use a recipe without ug (e.g. 'freescale', 'fast'), or Wan 2.2 "
            "TI2V-5B, whose image-to-video keeps its transformer's input to the latents"
        )
    if getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(
            f"pipe: {type(pipe).__name__} has two transformers (Wan 2.2 A14B's high- and low-noise experts), which "
            "hiresdiff does not yet attach its parts to: use a pipeline with one transformer (Wan 2.1, Wan 2.2 TI2V-5B)"
        )
    cascade = recipe.cascade
    if cascade is not None and cascade.stage_lora is not None and not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"stage_lora: {type(pipe).__name__} loads no LoRA (load_lora_weights): use stage_lora=None")
    tiles = cascade is not None and cascade.tiles is not None
    whole_image = [name for name in ("controlnet", "adapter") if getattr(pipe, name, None) is not None]
    if tiles and (whole_image or recipe.upsamplers is not None):
        parts = whole_image + (["feature upsamplers"] if recipe.upsamplers is not None else [])
        raise ValueError(
            f"tiles: the {', '.join(parts)} of this run work on the whole image, which a tile cannot take: use "
            "tiles=None"
        )
    if family.flow and recipe.upsamplers is not None:
        raise ValueError(
            "upsamplers: Self-Cascade's feature upsamplers plug into UNet skip features; "
            f"{type(denoiser).__name__} is a transformer: use the tuning-free Self-Cascade (upsamplers=None)"
        )
    if not family.flow and recipe.positions is not None:
        raise ValueError(
            f"positions: rescales a transformer's position embedding; {type(denoiser).__name__} has none "
            "(its analogue on a UNet is FreeScale's dilation): use positions=None"
        )


def _stage_scheduler(pipe, recipe: Recipe, family: DenoiserFamily, denoiser):
    """The scheduler instance of the cascade's later stages (``None``: the pipeline's): ``stage_scheduler`` as given,
    or made by its short name from the pipeline's training schedule
    (:func:`hiresdiff.sampling.schedulers.make_scheduler`); ``ValueError`` naming ``stage_scheduler`` for a flow
    pipeline, an unknown name or another training schedule."""
    scheduler = recipe.cascade.stage_scheduler if recipe.cascade is not None else None
    if scheduler is None:
        return None
    if family.flow or not (isinstance(scheduler, str) or hasattr(scheduler, "set_timesteps")):
        raise ValueError(
            "stage_scheduler: a scheduler instance or name for a UNet pipeline's later stages (flow pipelines keep "
            f"their flow-matching scheduler); got {type(scheduler).__name__} for {type(denoiser).__name__}"
        )
    if isinstance(scheduler, str):
        from hiresdiff.sampling.schedulers import make_scheduler

        try:
            return make_scheduler(scheduler, pipe.scheduler.config)
        except ValueError as error:
            raise ValueError(f"stage_{error}") from None  # make_scheduler's message names "scheduler"
    if scheduler.config.num_train_timesteps != pipe.scheduler.config.num_train_timesteps:
        raise ValueError(
            "stage_scheduler: its training schedule must be the pipeline's (make it with "
            "from_config(pipe.scheduler.config), or give its name)"
        )
    return scheduler


def _check_positions(
    denoiser, family: DenoiserFamily, recipe: Recipe, stages, scale_factor: int, height: int, width: int
) -> None:
    """``ValueError`` when a stage is larger than a transformer's position table reaches and nothing rescales it."""
    reach = family.layout.position_reach(denoiser) if family.flow else 0
    if reach and transformer_positions(recipe) is None and max(max(stage.size) for stage in stages) > reach:
        raise ValueError(
            f"height and width: {type(denoiser).__name__}'s position embedding reaches {reach * scale_factor} pixels "
            f"per side (pos_embed_max_size {denoiser.config.pos_embed_max_size} patches); {height}x{width} needs it "
            "interpolated: use a recipe with positions=PositionConfig('pi'), or FreeScale (its restrained "
            "dilation is position interpolation on a transformer)"
        )


def _check_frames(stages, num_frames: Optional[int], temporal: Optional[int] = None) -> None:
    """``ValueError`` when ``num_frames`` does not divide by temporal UG's frame factor, or is not k·``temporal`` + 1
    for a VAE that compresses time by ``temporal`` (Wan's: 4; its pipeline would round the count silently)."""
    if (
        temporal
        and num_frames is not None
        and (not is_int(num_frames) or num_frames < 1 or (num_frames - 1) % temporal)
    ):
        raise ValueError(
            f"num_frames must be {temporal}·k + 1 (1, {temporal + 1}, {2 * temporal + 1}, …): the VAE compresses "
            f"time by {temporal}; got {num_frames!r}"
        )
    frame_factor = max(
        (
            level.factor[0]
            for stage in stages
            for level in stage.ug_levels
            if isinstance(level.factor, tuple) and len(level.factor) == 3
        ),
        default=1,
    )
    if num_frames is not None and num_frames % frame_factor:
        raise ValueError(
            f"num_frames={num_frames} is not divisible by the UG frame factor {frame_factor}: "
            f"num_frames must be a multiple of {frame_factor}"
        )


def _check_init_image(image, denoiser, family: DenoiserFamily, pipe, scale_factor: int) -> tuple[int, int]:
    """The size of a user's ``init_image`` in the denoiser's units; ``ValueError`` unless it is a finite image tensor
    of the codec's channels whose size divides by the VAE factor."""
    if family.video:
        raise ValueError("init_image: upscaling takes images; video pipelines (AnimateDiff) are not supported")
    channels = 3 if getattr(pipe, "vae", None) is not None else denoiser.config.in_channels
    if (
        not isinstance(image, torch.Tensor)
        or image.ndim != 4
        or image.shape[1] != channels
        or not torch.isfinite(image).all()
    ):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"init_image must be a finite (B, {channels}, H, W) tensor in [-1, 1]; got {shape}")
    h, w = image.shape[-2:]
    if h % scale_factor or w % scale_factor:
        raise ValueError(f"init_image size {h}x{w} must be a multiple of the VAE factor {scale_factor}")
    return h // scale_factor, w // scale_factor


def _trained_latent_size(
    denoiser, pipe, trained_size: Union[int, tuple[int, int], None], scale_factor: int
) -> tuple[int, int]:
    """The trained size in the denoiser's units: ``trained_size`` pixels (a side, or (height, width)) if given, else
    the denoiser's own."""
    if trained_size is None:
        return denoiser_trained_size(denoiser, pipe)
    sides = (trained_size,) * 2 if is_int(trained_size) else trained_size
    if (
        not isinstance(sides, (tuple, list))
        or len(sides) != 2
        or any(not is_int(side) or side < 1 or side % scale_factor for side in sides)
    ):
        raise ValueError(
            f"trained_size must be a positive multiple of the VAE factor {scale_factor} (pixels), or a (height, "
            f"width) pair of them; got {trained_size!r}"
        )
    return (sides[0] // scale_factor, sides[1] // scale_factor)
