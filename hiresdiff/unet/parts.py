"""The UNet family's adapter (SD 1.x/2.x, SDXL, AnimateDiff, pixel ``UNet2DModel``): which per-call parts a recipe
attaches to a UNet for one stage, how to tell they are there, and its Upsample Guidance hook.

The sampling core (:mod:`hiresdiff.sampling.stage_parts`) asks the denoiser's family for its adapter and never
branches on the family itself; :mod:`hiresdiff.transformer.parts` is the other adapter.
"""

from __future__ import annotations

from contextlib import ExitStack

from hiresdiff.core.resample import axis_factors
from hiresdiff.hooks.base import attached
from hiresdiff.hooks.call_context import CallContextHook, apply_call_context, scheduler_clock
from hiresdiff.unet.dilation import DILATION_HOOK, apply_dilation, dilated_convs, remove_dilation
from hiresdiff.unet.feature_upsamplers import attach_feature_upsamplers, detach_feature_upsamplers
from hiresdiff.unet.lowres_call import check_time_ids
from hiresdiff.unet.scale_fusion import (
    ScaleFusionAttnProcessor,
    apply_scale_fusion,
    remove_scale_fusion,
    self_attentions,
)
from hiresdiff.unet.upsample_guidance import UpsampleGuidanceHook, scheduler_schedule


class UNetParts:
    """FreeScale's dilation and scale fusion, Self-Cascade's feature upsamplers and UG on a UNet."""

    def call_context(self, unet, family, trained, scheduler) -> CallContextHook:
        """Attach the call context; a UNet's time is the scheduler's training step (0 … T), placed on the step
        fraction of ``scheduler``'s grid."""
        unit = scheduler.config.num_train_timesteps
        return apply_call_context(unet, trained, unit, clock=scheduler_clock(lambda: scheduler, unit))

    def attach(
        self, undo: ExitStack, unet, recipe, stage, context: CallContextHook, *, upsamplers=None, pivot=None
    ) -> None:
        """Attach the recipe's parts for ``stage`` (above the trained size), each removal registered on ``undo``
        before the part is attached."""
        if recipe.dilation is not None:
            undo.callback(remove_dilation, unet)
            apply_dilation(unet, recipe.dilation, context)
        if recipe.fusion is not None:
            undo.callback(remove_scale_fusion, unet)
            apply_scale_fusion(unet, recipe.fusion, context)
        if upsamplers is not None and pivot is not None:
            undo.callback(detach_feature_upsamplers, unet)
            attach_feature_upsamplers(unet, upsamplers, pivot, context, stage.size)

    def present(self, unet) -> list[str]:
        """The family's own parts already on ``unet``, by name."""
        present = []
        if any(attached(conv, DILATION_HOOK) for conv in dilated_convs(unet).values()):
            present.append("dilation")
        if any(isinstance(attn.processor, ScaleFusionAttnProcessor) for attn in self_attentions(unet).values()):
            present.append("scale fusion")
        return present

    def upsample_guidance_hook(self, unet, pipe, levels, family, scheduler=None, sdxl_time_ids: str = "scale"):
        """UG's hook for ``unet``: ᾱ and the prediction type from ``scheduler`` (default: the pipeline's, read at every
        call); ``ValueError`` for a bare UNet without one, a scheduler without ᾱ, a frame factor on an image UNet."""
        if scheduler is None and pipe is None:
            raise ValueError(
                "a bare UNet needs scheduler=: Upsample Guidance reads alphas_cumprod and prediction_type "
                "from the scheduler that samples with it"
            )
        scheduler_source = (lambda: scheduler) if scheduler is not None else (lambda: pipe.scheduler)
        scheduler_schedule(scheduler_source())
        for level in levels:
            if axis_factors(level.factor, 5)[0] > 1 and not family.video:
                raise ValueError(
                    f"factor {level.factor!r} scales frames, but {type(unet).__name__} is an image UNet; "
                    "temporal Upsample Guidance needs a video UNet (AnimateDiff's UNetMotionModel)"
                )
        check_time_ids(sdxl_time_ids)
        return UpsampleGuidanceHook(
            levels, scheduler_source, family, sdxl_time_ids, getattr(pipe, "vae_scale_factor", None)
        )


UNET_PARTS = UNetParts()
