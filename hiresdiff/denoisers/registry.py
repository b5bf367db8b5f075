"""The denoisers the sampling core supports and the little that differs between them.

One small per-architecture registry (docs/architecture.md, "Layers"): the output class a denoiser returns with
``return_dict=True``, whether it is a video UNet, whose ``sample`` is (B, C, F, H, W) and whose
ControlNet residuals arrive with frames folded into the batch, (B·F, C, h, w), and for the flow-matching
transformers (FLUX.1, SD3/3.5) their :mod:`~hiresdiff.denoisers.layouts` layout (packed tokens,
time unit, trained size, the pipeline's timestep grid). Pipelines are recognised by their ``unet`` or
``transformer`` component, never by name or path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from diffusers import (
    FluxTransformer2DModel,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
    UNetMotionModel,
    WanTransformer3DModel,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from diffusers.models.unets.unet_motion_model import UNetMotionOutput

from hiresdiff.denoisers.layouts import FluxLayout, QwenImageLayout, SD3Layout, WanLayout

SUPPORTED = (
    "pipelines whose denoiser is a UNet: SD 1.x/2.x and SDXL (UNet2DConditionModel), "
    "AnimateDiff (UNetMotionModel) and pixel-space UNet2DModel, or a flow-matching transformer: "
    "FLUX.1 (FluxTransformer2DModel), Qwen-Image (QwenImageTransformer2DModel), SD3/3.5 (SD3Transformer2DModel) "
    "and Wan 2.x (WanTransformer3DModel)"
)


@dataclass(frozen=True)
class DenoiserFamily:
    """What the sampling core and the hooks need to know about one denoiser class."""

    output_cls: type
    video: bool
    latent: bool = True  # denoises VAE latents (SD, SDXL, AnimateDiff), not pixels (UNet2DModel)
    layout: Any = None  # a flow transformer's TransformerLayout; None for the UNets (ε/v/x₀ on (B, C, [F,] H, W))

    @property
    def flow(self) -> bool:
        """A rectified-flow transformer (velocity prediction, flow-matching schedulers)."""
        return self.layout is not None


@functools.cache
def families() -> dict[type, DenoiserFamily]:
    """Denoiser class → :class:`DenoiserFamily` for every supported denoiser."""
    return {
        UNet2DConditionModel: DenoiserFamily(UNet2DConditionOutput, video=False),
        UNetMotionModel: DenoiserFamily(UNetMotionOutput, video=True),
        UNet2DModel: DenoiserFamily(UNet2DOutput, video=False, latent=False),
        FluxTransformer2DModel: DenoiserFamily(Transformer2DModelOutput, video=False, layout=FluxLayout()),
        QwenImageTransformer2DModel: DenoiserFamily(Transformer2DModelOutput, video=False, layout=QwenImageLayout()),
        SD3Transformer2DModel: DenoiserFamily(Transformer2DModelOutput, video=False, layout=SD3Layout()),
        WanTransformer3DModel: DenoiserFamily(Transformer2DModelOutput, video=True, layout=WanLayout()),
    }


def family_of(denoiser) -> DenoiserFamily:
    """The :class:`DenoiserFamily` of ``denoiser``; ``ValueError`` saying what is supported for anything else."""
    for cls, family in families().items():
        if isinstance(denoiser, cls):
            return family
    raise ValueError(f"hiresdiff supports {SUPPORTED}; got a {type(denoiser).__name__}")


def _layout_of_config(config: Mapping[str, Any]):
    """The transformer layout a denoiser config describes (FLUX: ``axes_dims_rope``; SD3: ``pos_embed_max_size``),
    ``None`` for a UNet's."""
    if "block_out_channels" in config:
        return None
    if "rope_max_seq_len" in config:
        return WanLayout()
    if "axes_dims_rope" in config:  # FLUX pools a CLIP projection; Qwen-Image has none
        return FluxLayout() if "pooled_projection_dim" in config else QwenImageLayout()
    if "pos_embed_max_size" in config:
        return SD3Layout()
    raise ValueError(f"hiresdiff supports {SUPPORTED}; this config describes none of them")


def trained_size(denoiser, pipe=None) -> tuple[int, int]:
    """The (height, width) the denoiser (or a UNet's config, a mapping) was trained at, in its own units (latents,
    or pixels for UNet2DModel). FLUX's is its pipeline's ``default_sample_size`` (``pipe`` needed)."""
    config = getattr(denoiser, "config", denoiser)
    layout = _layout_of_config(config)
    if layout is not None:
        return layout.trained_size(denoiser, pipe)
    size = config["sample_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def size_multiple(denoiser) -> int:
    """What the latent (or pixel) size of the denoiser (or of its config, a mapping) must divide by: for a UNet 2 per
    down block that has a downsampler (2^(levels−1)), for FLUX and Qwen-Image 2 (their 2×2 packing), for SD3 its
    ``patch_size``."""
    config = getattr(denoiser, "config", denoiser)
    layout = _layout_of_config(config)
    if layout is not None:
        return layout.size_multiple(config)
    return 2 ** (len(config["block_out_channels"]) - 1)


def vae_factor(pipe) -> int:
    """Pixels per latent pixel of ``pipe``'s VAE (``vae_scale_factor``; Wan's ``vae_scale_factor_spatial``); 1 for a
    pipeline without one (pixel models)."""
    return getattr(pipe, "vae_scale_factor", None) or getattr(pipe, "vae_scale_factor_spatial", None) or 1


def _unsupported(pipeline: str, denoiser: str) -> ValueError:
    return ValueError(f"hiresdiff supports {SUPPORTED}; {pipeline} has {denoiser}")


def find_denoiser(pipe_or_denoiser) -> tuple[Any, Optional[Any]]:
    """(denoiser, pipeline) for a pipeline with a supported ``unet`` or ``transformer``, (denoiser, None) for a bare
    supported one; a ``torch.compile``d denoiser gives the module it compiles (hooks on it are traced into the
    compiled calls)."""
    if isinstance(pipe_or_denoiser, torch.nn.Module):
        denoiser = getattr(pipe_or_denoiser, "_orig_mod", pipe_or_denoiser)
        family_of(denoiser)
        return denoiser, None
    name = "unet" if getattr(pipe_or_denoiser, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe_or_denoiser, name, None)
    denoiser = getattr(denoiser, "_orig_mod", denoiser)
    if denoiser is None:
        raise _unsupported(type(pipe_or_denoiser).__name__, "neither a unet nor a transformer")
    if not any(isinstance(denoiser, cls) for cls in families()):
        raise _unsupported(type(pipe_or_denoiser).__name__, f"{name} {type(denoiser).__name__}")
    return denoiser, pipe_or_denoiser


def check_model_index(model_index: Mapping[str, Any]) -> None:
    """Fail before any weights load unless a pipeline's ``model_index.json`` names a supported denoiser."""
    name = "unet" if "unet" in model_index else "transformer"
    entry = model_index.get(name)
    class_name = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
    if class_name not in {cls.__name__ for cls in families()}:
        raise _unsupported(
            model_index.get("_class_name", "this pipeline"),
            f"{name} {class_name}" if class_name else "neither a unet nor a transformer",
        )
