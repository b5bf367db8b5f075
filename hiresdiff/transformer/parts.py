"""The flow transformers' adapter (FLUX.1, SD3/3.5): which per-call parts a recipe attaches to a transformer for one
stage, how to tell they are there, and its Upsample Guidance hook (UG for rectified flow).

The analogues of the UNet's parts (:mod:`hiresdiff.unet.parts`): position rescaling on the position embedding (the
recipe's ``positions``, or for FreeScale's dilation position interpolation over the same window) and scale fusion
on the joint attention. A new flow transformer whose blocks follow FLUX's or SD3's needs only its layout and its
registry entry (:mod:`hiresdiff.denoisers`).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Optional

from hiresdiff.core.resample import axis_factors
from hiresdiff.denoisers.registry import size_multiple
from hiresdiff.hooks.base import attached
from hiresdiff.hooks.call_context import CallContextHook, apply_call_context, scheduler_clock
from hiresdiff.methods.positions import PositionConfig
from hiresdiff.transformer.joint_fusion import (
    JointFusionProcessor,
    apply_joint_fusion,
    joint_attentions,
    remove_joint_fusion,
)
from hiresdiff.transformer.position_scaling import (
    POSITIONS_HOOK,
    apply_positions,
    position_embedding,
    remove_positions,
)
from hiresdiff.transformer.upsample_guidance import FlowUpsampleGuidanceHook


def transformer_positions(recipe) -> Optional[PositionConfig]:
    """The position rescaling a flow transformer runs for ``recipe``: its ``positions``, or for FreeScale's
    restrained dilation its analogue, position interpolation over the same window."""
    if recipe.positions is not None:
        return recipe.positions
    return PositionConfig("pi", until=recipe.dilation.until) if recipe.dilation is not None else None


class TransformerParts:
    """Position rescaling, joint-attention scale fusion and UG-RF on a flow transformer."""

    def call_context(self, transformer, family, trained, scheduler) -> CallContextHook:
        """Attach the call context; a transformer's time is σ in its layout's unit (FLUX: σ, SD3: σ·1000), placed on
        the step fraction of ``scheduler``'s grid."""
        unit = family.layout.time_unit
        return apply_call_context(transformer, trained, unit, family.layout, scheduler_clock(lambda: scheduler, unit))

    def attach(
        self, undo: ExitStack, transformer, recipe, stage, context: CallContextHook, *, upsamplers=None, pivot=None
    ) -> None:
        """Attach the recipe's parts for ``stage`` (above the trained size), each removal registered on ``undo``
        before the part is attached (``upsamplers``: none on a transformer, refused by the plan)."""
        positions = transformer_positions(recipe)
        if positions is not None:
            undo.callback(remove_positions, transformer)
            apply_positions(transformer, positions, context)
        if recipe.fusion is not None:
            undo.callback(remove_joint_fusion, transformer)
            apply_joint_fusion(transformer, recipe.fusion, context)

    def present(self, transformer) -> list[str]:
        """The family's own parts already on ``transformer``, by name."""
        present = []
        if attached(position_embedding(transformer), POSITIONS_HOOK):
            present.append("position rescaling")
        if any(isinstance(attn.processor, JointFusionProcessor) for attn in joint_attentions(transformer).values()):
            present.append("scale fusion")
        return present

    def upsample_guidance_hook(self, transformer, pipe, levels, family, scheduler=None, sdxl_time_ids: str = "scale"):
        """UG-RF's hook: σ comes from the call itself, η's window from the grid of ``scheduler`` (default: the
        pipeline's, read at every call; a bare transformer: the continuous clock p = 1 − σ); ``ValueError`` for a
        frame factor."""
        for level in levels:
            axis_factors(level.factor, 4)  # (H, W) only: ValueError for a frame factor
        source = (
            (lambda: scheduler) if scheduler is not None else (lambda: pipe.scheduler) if pipe is not None else None
        )
        clock = scheduler_clock(source, 1.0) if source else None  # the hook reads σ, in unit 1
        return FlowUpsampleGuidanceHook(levels, family, size_multiple(transformer), clock)


TRANSFORMER_PARTS = TransformerParts()
