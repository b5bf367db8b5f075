"""Predicted FLOPs and peak memory of a run at real scale, without weights or a GPU (``hiresdiff plan``).

The real architecture (:mod:`hiresdiff.cost.architectures`: the published SD 1.5 / SDXL / FLUX.1-dev configs)
is built on
the ``meta`` device and :func:`hiresdiff.generate` runs the recipe through it (:mod:`hiresdiff.cost.meta_run`),
every stage, step, hook and VAE call as a real run makes them, under :class:`hiresdiff.cost.counting.Counter`.
That gives, per stage, the FLOPs and the most bytes of activations held at once; the prediction of a device's
peak is the weights on it plus that working memory (the VAE and text encoders stay on the device, as in a
pipeline moved there with ``pipe.to("cuda")``). Direct sampling (``naive`` at the target, same steps) is counted
the same way, so ``relative_flops`` is the cost of the recipe as a fraction of direct's.

The text encoders run once per prompt whatever the size; their weights count at their published sizes
(:data:`~hiresdiff.cost.residency.TEXT_ENCODERS`); their work, counted on the architectures' tiny stand-ins at the
real prompt lengths (77 CLIP tokens; FLUX also 512 T5 tokens), is negligible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from hiresdiff.cost import architectures
from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE, Count, Counter
from hiresdiff.cost.meta_run import CallMemo, as_meta_twin, meta_twin, models_on_meta
from hiresdiff.cost.residency import TEXT_ENCODERS, Residency, residency
from hiresdiff.denoisers.registry import find_denoiser
from hiresdiff.loading.low_memory import check_offload, check_quant_mode
from hiresdiff.recipe import as_recipe
from hiresdiff.sampling.generate import generate
from hiresdiff.sampling.run_plan import plan_run
from hiresdiff.transformer.parts import transformer_positions

GIB = 2**30
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PLAN_ARCHS = tuple(TEXT_ENCODERS)


@dataclass
class StageCost:
    """One stage: its output ``size`` in pixels, the denoiser ``steps`` it runs, and what it costs."""

    index: int
    size: tuple[int, int]
    steps: int
    flops: int
    peak_bytes: int


@dataclass
class Plan:
    """The prediction for one recipe at one size (see the module docstring)."""

    arch: str
    size: tuple[int, int]
    method: str
    dtype: str
    steps: int
    weights_bytes: int
    stages: list[StageCost] = field(default_factory=list)
    direct_flops: Optional[int] = None
    offload: str = "none"
    quant: str = "none"
    residency: Optional[Residency] = None  # None: every weight resident (weights_bytes)
    num_frames: Optional[int] = None  # a video's clip length

    @property
    def flops(self) -> int:
        return sum(stage.flops for stage in self.stages)

    @property
    def working_bytes(self) -> int:
        return max(stage.peak_bytes for stage in self.stages)

    def _peak(self, working: int) -> int:
        if self.residency is None:
            return self.weights_bytes + working
        return self.residency.peak(working)

    @property
    def peak_bytes(self) -> int:
        """Predicted peak on the device: the weights resident in the largest phase plus the working memory."""
        return self._peak(self.working_bytes)

    @property
    def relative_flops(self) -> Optional[float]:
        return None if not self.direct_flops else self.flops / self.direct_flops

    def fits(self, memory_gib: float) -> bool:
        """Whether the peak, with the allocator's margin (``ALLOCATOR_TOLERANCE``), fits ``memory_gib`` GiB."""
        return self._peak(round(self.working_bytes * (1 + ALLOCATOR_TOLERANCE))) <= memory_gib * GIB


def check_arch(arch: str) -> str:
    if arch not in PLAN_ARCHS:
        raise ValueError(f"arch must be one of {PLAN_ARCHS}; got {arch!r}")
    return arch


def window_edges(recipe) -> tuple[float, ...]:
    """The step fractions where a denoiser call's work changes in a run of ``recipe`` (its model family's values
    filled in): dilation's and the position rescaling's ``until`` (the rest of a recipe's windows decide whether a
    call is made, not what it costs)."""
    return tuple(sorted({part.until for part in (recipe.dilation, transformer_positions(recipe)) if part is not None}))


def count_run(
    pipe, recipe, height: int, width: int, steps: int, prompt=None, edges=None, **generate_kwargs
) -> list[Count]:
    """FLOPs and working memory of ``hiresdiff.generate(pipe, …)`` per stage; ``pipe``'s models on ``meta``
    (:func:`~hiresdiff.cost.meta_run.meta_twin`, :func:`~hiresdiff.cost.architectures.build_pipeline`). With
    ``edges`` (:func:`window_edges`), each kind of denoiser call runs once
    (:class:`~hiresdiff.cost.meta_run.CallMemo`)."""
    parts = []
    with torch.inference_mode(), Counter() as counter:
        memo = CallMemo(counter, edges) if edges is not None else None
        with models_on_meta(pipe, memo):
            generate(
                pipe,
                prompt,
                height=height,
                width=width,
                recipe=recipe,
                steps=steps,
                on_stage=lambda stage, latents: parts.append(counter.split()),
                **generate_kwargs,
            )
        parts.append(counter.split())
    return parts


def relative_flops(pipe, recipe, height: int, width: int, steps: int, **generate_kwargs) -> float:
    """FLOPs of ``recipe`` over those of direct sampling at the same size and steps, counted on a
    :func:`~hiresdiff.cost.meta_run.meta_twin` of ``pipe`` (any loaded pipeline; nothing is computed)."""
    twin = meta_twin(pipe)
    return run_flops(twin, recipe, height, width, steps, **generate_kwargs) / run_flops(
        twin, None, height, width, steps, **generate_kwargs
    )


def run_flops(twin, recipe, height: int, width: int, steps: int, **generate_kwargs) -> int:
    """All FLOPs of one run of ``recipe`` on a meta ``twin`` (:func:`count_run`'s stages summed)."""
    return sum(part.flops for part in count_run(twin, recipe, height, width, steps, **generate_kwargs))


def enlargement_relative_flops(
    pipe, upscaler, trained: int, height: int, width: int, steps: int, **generate_kwargs
) -> float:
    """FLOPs of sampling at the trained size (``trained``² pixels) and enlarging the image to ``height`` × ``width`` by
    ``upscaler`` (a super-resolution callable, counted; ``None``: an interpolation, free) over those of direct
    sampling at ``height`` × ``width`` with the same steps, counted on a meta twin of ``pipe``."""
    twin = meta_twin(pipe)
    flops = run_flops(twin, None, trained, trained, steps, **generate_kwargs)
    if upscaler is not None:
        with torch.inference_mode(), Counter() as counter:
            upscaler(torch.empty(1, 3, trained, trained, device="meta"), (height, width))
        flops += counter.total.flops
    return flops / run_flops(twin, None, height, width, steps, **generate_kwargs)


def predicted_working_bytes(pipe, recipe, height: int, width: int, **call) -> int:
    """Working memory :func:`hiresdiff.generate` will need for ``recipe`` on ``pipe`` at ``height`` × ``width``,
    counted on a meta twin with 2 steps: the peak is one step's (the first of a stage, where every early part is
    on), so fewer steps give the same peak. ``call``: the call's plain arguments (prompt, guidance, frames)."""
    return max(
        part.peak_bytes for part in count_run(meta_twin(pipe), recipe, height, width, 2, output_type="pt", **call)
    )


def fit_warning(pipe, recipe, height: int, width: int, free_bytes: int, **call) -> Optional[str]:
    """A warning when the predicted working memory (with the allocator's margin) exceeds ``free_bytes``, else None."""
    need = predicted_working_bytes(pipe, recipe, height, width, **call) * (1 + ALLOCATOR_TOLERANCE)
    if need <= free_bytes:
        return None
    return (
        f"this run needs about {need / GIB:.1f} GiB of working memory "
        f"(predicted, with a {100 * ALLOCATOR_TOLERANCE:.0f}% "
        f"margin) and the device has {free_bytes / GIB:.1f} GiB free: it will likely run out of memory. Tile the VAE "
        "(vae_tiling=True), choose a smaller size, or the fast recipe; `hiresdiff plan` shows the cost per stage"
    )


def free_device_memory(denoiser) -> Optional[int]:
    """Bytes free on the denoiser's CUDA device (``None`` elsewhere: CPU memory is the system's to manage)."""
    device = next(denoiser.parameters()).device
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def memory_warning(pipe, recipe, height: int, width: int, **call) -> Optional[str]:
    """:func:`fit_warning` against the free memory of the CUDA device ``pipe``'s denoiser is on (``None`` on other
    devices): what to ask before a run that may not fit. It counts the run on a meta twin (a few seconds), which is
    why :func:`hiresdiff.generate` never does it unasked; the CLI does before every pipeline run on CUDA."""
    free = free_device_memory(find_denoiser(pipe)[0])
    if free is None:
        return None
    plain = {
        name: value
        for name, value in call.items()  # what a meta twin's run needs of the call
        if name != "output_type" and isinstance(value, (str, int, float, bool, type(None)))
    }
    return fit_warning(pipe, as_recipe(recipe) if recipe is not None else None, height, width, free, **plain)


def plan(
    arch: str,
    height: int,
    width: Optional[int] = None,
    method: str = "freescale",
    steps: int = 30,
    dtype: str = "fp16",
    pipe=None,
    progress: bool = False,
    direct_flops: Optional[int] = None,
    offload: str = "none",
    quant: str = "none",
    num_frames: Optional[int] = None,
    **generate_kwargs,
) -> Plan:
    """The :class:`Plan` of ``method`` (a preset name or a :class:`~hiresdiff.recipe.Recipe`) for ``arch`` at
    ``height`` × ``width`` pixels with ``steps`` steps; ``generate_kwargs`` go to :func:`hiresdiff.generate`
    (``vae_tiling=``, …). ``pipe``: the architecture's meta pipeline (a meta twin,
    :func:`~hiresdiff.cost.meta_run.as_meta_twin`), to reuse; ``progress``: show its steps;
    ``direct_flops``: direct sampling's FLOPs at this size and steps when already counted (a naive plan's ``flops``);
    ``offload``, ``quant``: the run's CPU offload and denoiser quantization (:mod:`hiresdiff.cost.residency`);
    ``num_frames``: a video architecture's clip length (default its pipeline's, :data:`~hiresdiff.cost.architectures.
    VIDEO_FRAMES`)."""
    width = height if width is None else width
    if num_frames is None and arch in architectures.VIDEO_FRAMES:
        num_frames = architectures.VIDEO_FRAMES[arch]
    if num_frames is not None:
        generate_kwargs["num_frames"] = num_frames
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}; got {dtype!r}")
    recipe = as_recipe(method)
    if pipe is None:
        pipe = architectures.build_pipeline(check_arch(arch), device="meta", dtype=DTYPES[dtype])
    pipe = as_meta_twin(pipe)
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    element = torch.finfo(DTYPES[dtype]).bits // 8
    denoiser, _ = find_denoiser(pipe)
    check_offload(offload)
    check_quant_mode(quant)
    placed = residency(arch, denoiser, pipe.vae, offload, quant, element)
    result = Plan(
        arch,
        (height, width),
        recipe.name,
        dtype,
        steps,
        placed.weights,
        offload=offload,
        quant=quant,
        residency=placed,
        num_frames=num_frames,
    )
    planned = plan_run(
        pipe, architectures.PROMPT, height=height, width=width, recipe=recipe, steps=steps, num_frames=num_frames
    )
    edges = window_edges(planned.recipe) if planned.recipe.upsamplers is None else None
    parts = count_run(
        pipe, recipe, height, width, steps, architectures.PROMPT, edges, output_type="pt", **generate_kwargs
    )
    for stage, part in zip(planned.stages, parts):
        result.stages.append(StageCost(stage.index, stage.pixels, stage.steps_run, part.flops, part.peak_bytes))
    if recipe.describe() == "naive":
        direct_flops = result.flops
    elif direct_flops is None:
        direct = count_run(
            pipe, None, height, width, steps, architectures.PROMPT, (), output_type="pt", **generate_kwargs
        )
        direct_flops = sum(part.flops for part in direct)
    result.direct_flops = direct_flops
    return result
