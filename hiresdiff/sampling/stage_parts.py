"""The per-call parts of a :class:`~hiresdiff.recipe.Recipe` on a UNet or flow transformer, for one stage.

The sampling core (:mod:`hiresdiff.sampling.generate`, for pixel models and pipelines alike) runs
every stage inside :func:`stage_modifications`: it attaches, in this order, the call-context hook (innermost:
every real UNet call passes through it), dilated convs, fused self-attention, the feature upsamplers, and
Upsample Guidance (outermost: it calls the UNet again at the trained size, and those calls see their own
context), each through diffusers' ``HookRegistry`` or as an attention processor, with its removal registered
before it is attached; on exit they come off in reverse order, also when the stage raises or is interrupted.
A flow transformer (FLUX, SD3) gets the analogues: the call context, position rescaling on its position embedding
(:mod:`hiresdiff.transformer.position_scaling`; the recipe's ``positions``, or PI over the dilation's window), scale
fusion on its joint attention (:mod:`hiresdiff.transformer.joint_fusion`) and UG for rectified flow
(:mod:`hiresdiff.transformer.upsample_guidance`). A denoiser that already carries one of them is refused. A stage at
the trained size gets nothing (but temporal UG): it is plain sampling bit for bit.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from hiresdiff.hooks.call_context import apply_call_context, remove_call_context
from hiresdiff.unet.dilation import apply_dilation, remove_dilation
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers, attach_feature_upsamplers, detach_feature_upsamplers
from hiresdiff.unet.upsample_guidance import apply_upsample_guidance, remove_upsample_guidance
from hiresdiff.unet.scale_fusion import apply_scale_fusion, remove_scale_fusion
from hiresdiff.hooks.families import family_of
from hiresdiff.hooks.families import trained_size as denoiser_trained_size
from hiresdiff.transformer.joint_fusion import apply_joint_fusion, remove_joint_fusion
from hiresdiff.transformer.position_scaling import apply_positions, remove_positions
from hiresdiff.methods.freescale import blend_detail, check_detail_alpha, detail_weight, resize_alpha
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.methods.self_cascade import CascadeConfig
from hiresdiff.recipe import Recipe, Stage


def load_upsamplers(upsamplers, unet, stages: Sequence[Stage]) -> dict[int, FeatureUpsamplers]:
    """The recipe's ``upsamplers`` as ``{stage scale: loaded set}``, each checked against ``unet`` and ``stages``.

    One set (an instance or a ``save_pretrained`` folder) serves the stage it was trained for (its ``scale``):
    ``ValueError`` naming ``upsamplers`` when this run has no such stage. A dict ``{scale: set}`` is a table
    per stage: stages without an entry run tuning-free, entries for stages this run does not have are unused.
    Sets built for another UNet are refused.
    """
    scales = sorted({int(max(s.scale)) for s in stages[1:] if max(s.scale) == int(max(s.scale))})
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
                raise ValueError(f"upsamplers {str(one)!r} cannot be loaded ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0] if str(error) else 'no message'})") from None
        if not isinstance(one, FeatureUpsamplers):
            raise ValueError(f"upsamplers must be FeatureUpsamplers or a folder they were saved to; got {type(one).__name__}")
        one.check_fits(unet)
        scale = one.config.scale if scale is None else scale
        if scale not in scales:
            raise ValueError(f"upsamplers: a set for the stage at {scale}x the trained size, but this run's later stages "
                             f"are at {scales or 'none'}; pass one set per stage as upsamplers={{scale: set}}")
        same = (one.device, one.dtype) == (unet.device, unet.dtype)
        loaded[scale] = one if same else one.to(device=unet.device, dtype=unet.dtype)
    return loaded


def stage_detail(cascade: CascadeConfig, previous_rgb: torch.Tensor, size: Sequence[int],
                 num_train_timesteps: int) -> Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """FreeScale's detail control for one stage: ``blend(z, z̃_t, t)`` = (1−c)·z + c·z̃_t, or ``None`` when off.

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

    def blend(z: torch.Tensor, z_tilde: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return blend_detail(z, z_tilde, detail_weight(t, num_train_timesteps, alpha))

    return blend


def check_unmodified(unet) -> None:
    """``ValueError`` if ``unet`` (or a flow transformer) already carries one of the per-call parts (applied by hand,
    or a run in progress on it): a stage would otherwise remove it on exit."""
    from hiresdiff.hooks.call_context import CALL_CONTEXT_HOOK
    from hiresdiff.unet.dilation import DILATION_HOOK, dilated_convs
    from hiresdiff.unet.feature_upsamplers import UPSAMPLERS_HOOK
    from hiresdiff.hooks.base import attached
    from hiresdiff.unet.upsample_guidance import UPSAMPLE_GUIDANCE_HOOK
    from hiresdiff.transformer.joint_fusion import JointFusionProcessor, joint_attentions
    from hiresdiff.transformer.position_scaling import POSITIONS_HOOK
    from hiresdiff.unet.scale_fusion import ScaleFusionAttnProcessor, self_attentions

    present = [name for name in (CALL_CONTEXT_HOOK, UPSAMPLE_GUIDANCE_HOOK, UPSAMPLERS_HOOK) if attached(unet, name)]
    if family_of(unet).flow:
        if attached(unet.pos_embed, POSITIONS_HOOK):
            present.append("position rescaling")
        if any(isinstance(attn.processor, JointFusionProcessor) for attn in joint_attentions(unet).values()):
            present.append("scale fusion")
    else:
        if any(attached(conv, DILATION_HOOK) for conv in dilated_convs(unet).values()):
            present.append("dilation")
        if any(isinstance(attn.processor, ScaleFusionAttnProcessor) for attn in self_attentions(unet).values()):
            present.append("scale fusion")
    if present:
        raise ValueError(f"the denoiser already carries {', '.join(present)}: remove them (remove_upsample_guidance, …) "
                         "before sampling with a recipe, which attaches its own parts for each stage")


def transformer_positions(recipe: Recipe) -> Optional[PositionConfig]:
    """The position rescaling a flow transformer runs for ``recipe``: its ``positions``, or for FreeScale's
    restrained dilation its analogue, position interpolation over the same window."""
    if recipe.positions is not None:
        return recipe.positions
    return PositionConfig("pi", until=recipe.dilation.until) if recipe.dilation is not None else None


@contextmanager
def stage_modifications(unet, recipe: Recipe, stage: Stage, scheduler, *, upsamplers=None,
                        pivot: Optional[torch.Tensor] = None, sdxl_time_ids: str = "scale",
                        trained_size: Optional[Sequence[int]] = None):
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
    layout = family_of(unet).layout
    trained = tuple(trained_size) if trained_size is not None else denoiser_trained_size(unet)
    with ExitStack() as undo:  # each part's removal is registered before it is attached (removal is a no-op if absent)
        if stage.is_upscaled and layout is not None:
            undo.callback(remove_call_context, unet)
            context = apply_call_context(unet, trained, layout.time_unit, layout)
            positions = transformer_positions(recipe)
            if positions is not None:
                undo.callback(remove_positions, unet)
                apply_positions(unet, positions, context)
            if recipe.fusion is not None:
                undo.callback(remove_joint_fusion, unet)
                apply_joint_fusion(unet, recipe.fusion, context)
        elif stage.is_upscaled:
            undo.callback(remove_call_context, unet)
            context = apply_call_context(unet, trained, scheduler.config.num_train_timesteps)
            if recipe.dilation is not None:
                undo.callback(remove_dilation, unet)
                apply_dilation(unet, recipe.dilation, context)
            if recipe.fusion is not None:
                undo.callback(remove_scale_fusion, unet)
                apply_scale_fusion(unet, recipe.fusion, context)
            if upsamplers is not None and pivot is not None:
                undo.callback(detach_feature_upsamplers, unet)
                attach_feature_upsamplers(unet, upsamplers, pivot, context, stage.size)
        if stage.ug_levels:  # also at spatial scale 1 for temporal UG
            undo.callback(remove_upsample_guidance, unet)
            apply_upsample_guidance(unet, stage.ug_levels, scheduler=scheduler, sdxl_time_ids=sdxl_time_ids)
        yield
