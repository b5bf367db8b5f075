"""One text-to-image (or text-to-video) run of any diffusers UNet pipeline, with or without Upsample Guidance.

The function behind ``hiresdiff generate --method ug``: load with ``DiffusionPipeline.from_pretrained``
(a hub id or a local folder), pick the device and dtype, apply UG around the call and remove it again,
even when the call fails.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from hiresdiff.core.resample import axis_factors
from hiresdiff.integrations.hooks import apply_upsample_guidance, remove_upsample_guidance
from hiresdiff.integrations.lowres_call import check_latent_size
from hiresdiff.integrations.unet_families import check_model_index
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig

TILING_SUGGESTED_PIXELS = 2048 * 2048


def pick_device() -> str:
    """``"cuda"`` if available, else ``"mps"`` if available, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA; fp32 elsewhere (CPU kernels are slow or missing in fp16, MPS fp16 is unreliable)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def configure_vae_tiling(pipe, height: int, width: int, vae_tiling: Optional[bool]) -> None:
    """``True``: ``pipe.vae.enable_tiling()``; ``None``: warn when the output is large enough to need it."""
    if vae_tiling:
        if getattr(pipe, "vae", None) is None:
            raise ValueError(f"vae_tiling=True, but {type(pipe).__name__} has no VAE")
        pipe.vae.enable_tiling()
    elif vae_tiling is None and height * width >= TILING_SUGGESTED_PIXELS and getattr(pipe, "vae", None) is not None:
        warnings.warn(f"decoding {height}x{width} with the whole-image VAE needs a lot of memory; "
                      "pass vae_tiling=True (pipe.vae.enable_tiling()) if it runs out", stacklevel=3)


def check_size(pipe, ug: UpsampleGuidanceConfig, height: int, width: int, num_frames: Optional[int]) -> None:
    """Before sampling: the latent grid of ``height``×``width`` (and ``num_frames``) must divide by the UG factor.

    Without ``num_frames`` only height and width are checked; a video's default frame count is checked
    by the hook at the first UNet call.
    """
    vae_scale_factor = getattr(pipe, "vae_scale_factor", None)
    factors = axis_factors(ug.factor, 5)
    latent = (height // (vae_scale_factor or 1), width // (vae_scale_factor or 1))
    if num_frames is None:
        check_latent_size((1, 1, *latent), factors[1:], vae_scale_factor)
    else:
        check_latent_size((1, 1, num_frames, *latent), factors, vae_scale_factor)


def generate_with_pipeline(model: str, prompt: str, height: int, width: int, *,
                           ug: Optional[UpsampleGuidanceConfig] = None, steps: int = 30, seed: int = 0,
                           guidance_scale: float = 7.5, device: Optional[str] = None,
                           dtype: Optional[torch.dtype] = None, num_frames: Optional[int] = None,
                           negative_prompt: Optional[str] = None, vae_tiling: Optional[bool] = None,
                           progress: bool = True) -> list:
    """Generate with the pipeline at ``model`` at ``height``×``width``; return PIL images (or a video's frames).

    Args:
        model: a diffusers pipeline folder or hub id (``DiffusionPipeline.from_pretrained``).
        ug: Upsample Guidance settings, or ``None`` for plain sampling at that size.
        steps, seed, guidance_scale, negative_prompt: the pipeline's own arguments; the seed drives a CPU
            generator, so a seed gives the same noise on every device.
        device / dtype: default :func:`pick_device` / :func:`pick_dtype`.
        num_frames: frames of a video pipeline (AnimateDiff); leave ``None`` for images.
        vae_tiling: ``True`` tiles the VAE, ``False`` never, ``None`` warns for outputs of 2048² pixels and more.
        progress: show the pipeline's progress bar.

    Raises:
        ValueError: before any weights load when UG is asked for a pipeline without a supported UNet; before
            sampling when height/width (or num_frames) do not divide by the UG factor on the latent grid.
    """
    from diffusers import DiffusionPipeline

    if ug is not None:
        check_model_index(DiffusionPipeline.load_config(model))
    device = device or pick_device()
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype or pick_dtype(device)).to(device)
    pipe.set_progress_bar_config(disable=not progress)
    configure_vae_tiling(pipe, height, width, vae_tiling)
    kwargs = dict(prompt=prompt, height=height, width=width, num_inference_steps=steps,
                  guidance_scale=guidance_scale, generator=torch.Generator("cpu").manual_seed(seed))
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    if ug is not None:
        check_size(pipe, ug, height, width, num_frames)
        apply_upsample_guidance(pipe, ug)
    try:
        output = pipe(**kwargs)
    finally:
        if ug is not None:
            remove_upsample_guidance(pipe)
    return output.frames[0] if hasattr(output, "frames") else output.images
