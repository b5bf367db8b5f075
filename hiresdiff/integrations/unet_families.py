"""The UNets the Upsample Guidance hook supports and the little that differs between them.

One small per-architecture registry (DESIGN.md §4): the output class a UNet returns with
``return_dict=True`` and whether it is a video UNet, whose ``sample`` is (B, C, F, H, W) and whose
ControlNet residuals arrive with frames folded into the batch, (B·F, C, h, w).
Pipelines are recognised by their ``unet`` component, never by name or path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, Optional

SUPPORTED = ("pipelines whose denoiser is a UNet: SD 1.x/2.x and SDXL (UNet2DConditionModel), "
             "AnimateDiff (UNetMotionModel) and pixel-space UNet2DModel")


@dataclass(frozen=True)
class UNetFamily:
    """What the hook needs to know about one UNet class."""

    output_cls: type
    video: bool
    latent: bool = True  # denoises VAE latents (SD, SDXL, AnimateDiff), not pixels (UNet2DModel)


@functools.cache
def families() -> dict[type, UNetFamily]:
    """UNet class → :class:`UNetFamily` for every supported UNet."""
    from diffusers import UNet2DConditionModel, UNet2DModel, UNetMotionModel
    from diffusers.models.unets.unet_2d import UNet2DOutput
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
    from diffusers.models.unets.unet_motion_model import UNetMotionOutput

    return {
        UNet2DConditionModel: UNetFamily(UNet2DConditionOutput, video=False),
        UNetMotionModel: UNetFamily(UNetMotionOutput, video=True),
        UNet2DModel: UNetFamily(UNet2DOutput, video=False, latent=False),
    }


def family_of(unet) -> UNetFamily:
    """The :class:`UNetFamily` of ``unet``; ``ValueError`` saying what is supported for anything else."""
    for cls, family in families().items():
        if isinstance(unet, cls):
            return family
    raise ValueError(f"Upsample Guidance supports {SUPPORTED}; got a {type(unet).__name__}")


def trained_size(unet) -> tuple[int, int]:
    """The (height, width) the UNet (or its config, a mapping) was trained at, in its own units (latents, or pixels
    for UNet2DModel)."""
    size = getattr(unet, "config", unet)["sample_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def size_multiple(unet) -> int:
    """How much the UNet (or its config, a mapping) shrinks its input: 2 per down block that has a downsampler
    (2^(levels−1))."""
    return 2 ** (len(getattr(unet, "config", unet)["block_out_channels"]) - 1)


def _unsupported(pipeline: str, denoiser: str) -> ValueError:
    return ValueError(f"Upsample Guidance supports {SUPPORTED}; {pipeline} has {denoiser}")


def find_unet(pipe_or_unet) -> tuple[Any, Optional[Any]]:
    """(unet, pipeline) for a pipeline with a supported ``unet``, (unet, None) for a bare supported UNet; a
    ``torch.compile``d UNet gives the module it compiles (hooks on it are traced into the compiled calls)."""
    import torch

    if isinstance(pipe_or_unet, torch.nn.Module):
        unet = getattr(pipe_or_unet, "_orig_mod", pipe_or_unet)  # torch.compile's wrapper: hooks go on the module it compiles
        family_of(unet)
        return unet, None
    unet = getattr(pipe_or_unet, "unet", None)
    unet = getattr(unet, "_orig_mod", unet)
    if unet is None:
        components = getattr(pipe_or_unet, "components", {})
        raise _unsupported(type(pipe_or_unet).__name__, "transformer" if "transformer" in components else "no unet")
    family_of(unet)
    return unet, pipe_or_unet


def check_model_index(model_index: Mapping[str, Any]) -> None:
    """Fail before any weights load unless a pipeline's ``model_index.json`` names a supported UNet."""
    unet = model_index.get("unet")
    class_name = unet[1] if isinstance(unet, (list, tuple)) and len(unet) == 2 else None
    if class_name not in {cls.__name__ for cls in families()}:
        denoiser = f"unet {class_name}" if class_name else "transformer" if "transformer" in model_index else "no unet"
        raise _unsupported(model_index.get("_class_name", "this pipeline"), denoiser)
