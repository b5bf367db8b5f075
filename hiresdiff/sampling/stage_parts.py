"""The per-call parts of a :class:`~hiresdiff.recipe.Recipe` on a UNet or flow transformer, for one stage.

The sampling core (:mod:`hiresdiff.sampling.generate`, for pixel models and pipelines alike) runs every stage inside
:func:`stage_modifications`: it attaches, in this order, the call-context hook (innermost: every real denoiser call
passes through it), the family's own parts (its adapter, :func:`~hiresdiff.sampling.family_parts.parts_of`: on a UNet
dilated convs, fused self-attention and the feature upsamplers; on a flow transformer position rescaling and scale
fusion on its joint attention), the tiled refinement (:mod:`~hiresdiff.hooks.tiled_denoising`, when the cascade asks
for it) and Upsample Guidance (outermost: it calls the denoiser again at the trained size, and
those calls see their own context), each through diffusers' ``HookRegistry`` or as an attention processor, with its
removal registered before it is attached; on exit they come off in reverse order, also when the stage raises or is
interrupted. A denoiser that already carries one of them is refused. A stage at the trained size gets nothing (but
temporal UG): it is plain sampling bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Optional

import torch

from hiresdiff.checks import cannot_load
from hiresdiff.denoisers.registry import family_of, size_multiple
from hiresdiff.denoisers.registry import trained_size as denoiser_trained_size
from hiresdiff.hooks.base import attached
from hiresdiff.hooks.call_context import CALL_CONTEXT_HOOK, remove_call_context
from hiresdiff.hooks.tiled_denoising import TILES_HOOK, attach_tiles, remove_tiles
from hiresdiff.methods.freescale import blend_detail, check_detail_alpha, detail_weight, resize_alpha
from hiresdiff.methods.self_cascade import CascadeConfig
from hiresdiff.recipe import Recipe, Stage
from hiresdiff.sampling.family_parts import (
    UPSAMPLE_GUIDANCE_HOOK,
    apply_upsample_guidance,
    parts_of,
    remove_upsample_guidance,
)
from hiresdiff.unet.feature_upsamplers import UPSAMPLERS_HOOK, FeatureUpsamplers


def load_upsamplers(upsamplers, unet, stages: Sequence[Stage]) -> dict[int, FeatureUpsamplers]:
    """The recipe's ``upsamplers`` as ``{stage scale: loaded set}``, each checked against ``unet`` and ``stages``.

    One set (an instance or a ``save_pretrained`` folder) serves the stage it was trained for (its ``scale``):
    ``ValueError`` naming ``upsamplers`` when this run has no such stage. A dict ``{scale: set}`` is a table
    per stage: stages without an entry run tuning-free, entries for stages this run does not have are unused.
    Sets built for another UNet are refused.
    """
    scales = sorted({int(max(s.scale)) for s in stages if s.index > 0 and max(s.scale) == int(max(s.scale))})
    if isinstance(upsamplers, dict):
        sets = {scale: one for scale, one in upsamplers.items() if scale in scales}
    else:
        sets = {None: upsamplers}
    loaded = {}
    for scale, one in sets.items():
        if isinstance(one, (str, Path)):
            try:
                one = FeatureUpsamplers.from_pretrained(one)
            except Exception as error:  # a truncated weights file: one line naming the folder
                raise cannot_load("upsamplers", one, error) from None
        if not isinstance(one, FeatureUpsamplers):
            raise ValueError(
                f"upsamplers must be FeatureUpsamplers or a folder they were saved to; got {type(one).__name__}"
            )
        one.check_fits(unet)
        scale = one.config.scale if scale is None else scale
        if scale not in scales:
            raise ValueError(
                f"upsamplers: a set for the stage at {scale}x the trained size, but this run's later stages "
                f"are at {scales or 'none'}; pass one set per stage as upsamplers={{scale: set}}"
            )
        same = (one.device, one.dtype) == (unet.device, unet.dtype)
        # Module.to moves in place: a copy goes to the UNet's device and dtype, the caller's set stays as it was
        loaded[scale] = one if same else copy.deepcopy(one).to(device=unet.device, dtype=unet.dtype)
    return loaded


def stage_detail(
    cascade: CascadeConfig, previous_rgb: torch.Tensor, size: Sequence[int]
) -> Optional[Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]]:
    """FreeScale's detail control for one stage: ``blend(z, z̃_t, p)`` = (1−c)·z + c·z̃_t at step fraction p, or
    ``None`` when off.

    α comes from ``cascade.detail_alpha``: a number, a map (resized to the stage's ``size``), or a callable
    from ``previous_rgb`` (the previous stage's image, (B, 3, H, W) in [-1, 1]) to a map.
    """
    alpha = cascade.detail_alpha
    if alpha is None:
        return None
    if callable(alpha):
        alpha = alpha(previous_rgb)
        check_detail_alpha(alpha)
    if isinstance(alpha, torch.Tensor):
        alpha = resize_alpha(alpha, size)

    def blend(z: torch.Tensor, z_tilde: torch.Tensor, progress: float) -> torch.Tensor:
        return blend_detail(z, z_tilde, detail_weight(progress, alpha))

    return blend


def check_unmodified(denoiser) -> None:
    """``ValueError`` if ``denoiser`` already carries one of the per-call parts
    (applied by hand, or a run in progress on
    it): a stage would otherwise remove it on exit."""
    present = [
        name
        for name in (CALL_CONTEXT_HOOK, UPSAMPLE_GUIDANCE_HOOK, UPSAMPLERS_HOOK, TILES_HOOK)
        if attached(denoiser, name)
    ]
    present += parts_of(family_of(denoiser)).present(denoiser)
    if present:
        raise ValueError(
            f"the denoiser already carries {', '.join(present)}: remove them (remove_upsample_guidance, …) "
            "before sampling with a recipe, which attaches its own parts for each stage"
        )


@contextmanager
def stage_modifications(
    unet,
    recipe: Recipe,
    stage: Stage,
    scheduler,
    *,
    upsamplers=None,
    pivot: Optional[torch.Tensor] = None,
    sdxl_time_ids: str = "scale",
    trained_size: Optional[Sequence[int]] = None,
):
    """Within the block, ``unet`` (or a flow transformer) runs ``stage`` of ``recipe``; afterwards it is exactly as
    before.

    Args:
        scheduler: the scheduler sampling the stage (UG reads ᾱ and the prediction type from it, dilation T).
        upsamplers: loaded :class:`~hiresdiff.unet.feature_upsamplers.FeatureUpsamplers` (or ``None``).
        pivot: the previous stage's clean result at its own size, in the UNet's space (for the upsamplers).
        sdxl_time_ids: SDXL micro-conditioning of UG's low-resolution calls (see ``lowres_call``).
        trained_size: the trained (h, w) in the denoiser's units (default: its own, :func:`denoisers.trained_size`).
    """
    check_unmodified(unet)
    family = family_of(unet)
    parts = parts_of(family)
    trained = tuple(trained_size) if trained_size is not None else denoiser_trained_size(unet)
    with ExitStack() as undo:  # each part's removal is registered before it is attached (removal is a no-op if absent)
        if stage.is_upscaled:
            undo.callback(remove_call_context, unet)
            context = parts.call_context(unet, family, trained, scheduler)
            parts.attach(undo, unet, recipe, stage, context, upsamplers=upsamplers, pivot=pivot)
            if recipe.cascade is not None and recipe.cascade.tiles is not None:
                undo.callback(remove_tiles, unet)
                attach_tiles(unet, trained, recipe.cascade.tiles, family.layout, size_multiple(unet))
        if stage.ug_levels:  # also at spatial scale 1 for temporal UG
            undo.callback(remove_upsample_guidance, unet)
            apply_upsample_guidance(unet, stage.ug_levels, scheduler=scheduler, sdxl_time_ids=sdxl_time_ids)
        yield
