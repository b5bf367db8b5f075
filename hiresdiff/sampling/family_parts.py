"""The per-call parts of any denoiser: the adapter of its family (:mod:`hiresdiff.unet.parts`,
:mod:`hiresdiff.transformer.parts`), and Upsample Guidance on any pipeline or denoiser, as a named diffusers hook.

``apply_upsample_guidance(pipe, UpsampleGuidanceConfig(...))`` turns every denoiser call of the pipeline into eq. 4 of
the paper (a UNet: :class:`~hiresdiff.unet.upsample_guidance.UpsampleGuidanceHook`; a flow transformer: its
rectified-flow form, :class:`~hiresdiff.transformer.upsample_guidance.FlowUpsampleGuidanceHook`);
``remove_upsample_guidance(pipe)`` puts the denoiser back as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from hiresdiff.denoisers.registry import DenoiserFamily, family_of, find_denoiser
from hiresdiff.hooks.base import attach, attached, detach
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, with_family_eta
from hiresdiff.transformer.parts import TRANSFORMER_PARTS, TransformerParts
from hiresdiff.unet.parts import UNET_PARTS, UNetParts

UPSAMPLE_GUIDANCE_HOOK = "upsample_guidance"


def parts_of(family: DenoiserFamily) -> Union[UNetParts, TransformerParts]:
    """The adapter of a denoiser family: the one place the sampling core tells a UNet from a flow transformer."""
    return TRANSFORMER_PARTS if family.flow else UNET_PARTS


def apply_upsample_guidance(
    pipe_or_unet,
    config: Union[UpsampleGuidanceConfig, Sequence[UpsampleGuidanceConfig]],
    scheduler=None,
    *,
    sdxl_time_ids: str = "scale",
) -> None:
    r"""Apply Upsample Guidance (eq. 4–5) to every UNet call of a pipeline, or of a bare UNet.

    Args:
        pipe_or_unet: a diffusers pipeline with a ``unet`` (SD 1.x/2.x, SDXL, AnimateDiff, their img2img,
            ControlNet and IP-Adapter variants, LoRA-loaded or not; a pixel ``UNet2DModel`` pipeline) or
            such a UNet itself.
        config: the UG settings. ``factor`` is int m (H, W) or a tuple per trailing axis; on AnimateDiff
            (2, 1, 1) is temporal UG (more frames) and (2, 2, 2) both. A sequence of configs nests them
            (:func:`hiresdiff.methods.upsample_guidance.nested_guided_prediction`; 4× as ×2 twice).
        scheduler: where ``alphas_cumprod`` and ``prediction_type`` come from. Default for a pipeline: its
            current ``scheduler``, read at every call. Required for a bare UNet.
        sdxl_time_ids: ``"scale"`` (default) or ``"keep"``: SDXL micro-conditioning of the low-res call,
            see :mod:`hiresdiff.unet.lowres_call`.

    Raises:
        ValueError: the pipeline has no supported UNet, a bare UNet comes without a scheduler, the
            scheduler is not DDPM-family, a frame factor is given for an image UNet, or UG is already applied.

    Example:

    ```python
    >>> pipe = StableDiffusionPipeline.from_pretrained(...)
    >>> apply_upsample_guidance(pipe, UpsampleGuidanceConfig(factor=2, theta=1.0, eta=0.6))
    >>> image = pipe("a cat", height=1024, width=1024).images[0]
    >>> remove_upsample_guidance(pipe)
    ```
    """
    unet, pipe = find_denoiser(pipe_or_unet)
    if attached(unet, UPSAMPLE_GUIDANCE_HOOK) is not None:
        raise ValueError("Upsample Guidance is already applied to this UNet; call remove_upsample_guidance first")
    family = family_of(unet)
    levels = [config] if isinstance(config, UpsampleGuidanceConfig) else list(config)
    if not levels or not all(isinstance(c, UpsampleGuidanceConfig) for c in levels):
        raise ValueError(f"config must be an UpsampleGuidanceConfig or a non-empty sequence of them; got {config!r}")
    levels = [with_family_eta(level, latent=family.latent, flow=family.flow) for level in levels]
    hook = parts_of(family).upsample_guidance_hook(unet, pipe, levels, family, scheduler, sdxl_time_ids)
    attach(unet, hook, UPSAMPLE_GUIDANCE_HOOK)


def remove_upsample_guidance(pipe_or_unet) -> None:
    """Remove Upsample Guidance from a pipeline's UNet (or a bare UNet); a no-op if it is not applied.

    The UNet is restored exactly: its ``forward``, and the hook registry if this hook created it, are
    deleted again when no other hook remains. Attention processors and config are never touched.
    """
    unet, _ = find_denoiser(pipe_or_unet)
    detach(unet, UPSAMPLE_GUIDANCE_HOOK)
