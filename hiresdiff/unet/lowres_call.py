"""The arguments of the trained-resolution UNet call of Upsample Guidance, ε(D[x_t]/√P, τ) in eq. 4.

``sample`` and ``timestep`` come from :func:`hiresdiff.methods.upsample_guidance.lowres_input`. Everything
else is the pipeline's own argument, unchanged unless it has a spatial or a frame axis:

* Unchanged: attention masks, ``class_labels``, ``timestep_cond``, ``cross_attention_kwargs`` (LoRA scale,
  IP-Adapter scale/masks) and ``added_cond_kwargs`` (SDXL ``text_embeds``, IP-Adapter ``image_embeds``):
  conditioning does not depend on the resolution. So is ``encoder_hidden_states`` (both CFG halves, as the
  pipeline batched them) — except that AnimateDiff pipelines pass it once per frame, (B·F, seq, dim): with
  a frame factor it is averaged over each block of frames like the latents (identical copies stay the same
  embedding; FreeNoise's per-frame prompts are averaged).
* SDXL ``added_cond_kwargs["time_ids"]`` — (original size, crop top-left, target size) in pixels, or with
  an aesthetic score in place of the target size for the refiner. ``"scale"`` (default) divides the sizes
  and crop by the spatial factor: the low branch is told it makes an image of its own grid, which is what
  the trained-resolution model it stands for was conditioned on. ``"keep"`` passes the high-resolution
  ids (what the unofficial SDXL port does), i.e. asks the low branch for a downscaled view of a large image.
* ControlNet / T2I-Adapter residuals (``down_block_additional_residuals``, ``mid_block_additional_residual``,
  ``down_intrablock_additional_residuals``) are block-averaged with ``D``, the operator that made the low
  input (a video UNet's residuals have frames folded into the batch, (B·F, C, h, w), and are unfolded
  first). The ControlNet is *not* run again: the UNet hook never sees the control image, and ``D`` keeps
  the control's layout at no cost. Its features were computed from x_t at t rather than D[x_t]/√P at τ;
  the linear ``D`` carries them to the low grid as it carries x_t. This needs the latent size divisible by
  factor·2^(levels−1), so that every residual divides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch

from hiresdiff.core.resample import Factor, axis_factors, check_divisible, downsample

TIME_IDS = ("scale", "keep")
RESIDUALS = ("down_block_additional_residuals", "mid_block_additional_residual", "down_intrablock_additional_residuals")


def check_time_ids(choice: str) -> None:
    if choice not in TIME_IDS:
        raise ValueError(f"sdxl_time_ids must be one of {TIME_IDS}; got {choice!r}")


def check_latent_size(shape: Sequence[int], factor: Factor, vae_scale_factor: Optional[int] = None) -> None:
    """Raise ``ValueError`` naming height/width (and frames) unless the latent grid divides by the UG factor."""
    names = "latent (frames, height, width)" if len(shape) == 5 else "latent (height, width)"
    try:
        check_divisible(shape, factor, names)
    except ValueError as error:
        factors = axis_factors(factor, len(shape))
        scale = vae_scale_factor or 1
        unit = f" pixels (VAE scale factor {scale} × UG factor)" if vae_scale_factor else " latent pixels"
        hint = f"height and width must be multiples of {factors[-2] * scale} and {factors[-1] * scale}{unit}"
        if len(factors) == 3 and factors[0] > 1:
            hint += f", num_frames a multiple of {factors[0]}"
        raise ValueError(f"{error}: {hint}") from None


def _downsample_folded(x: torch.Tensor, factors: tuple[int, ...], num_frames: int) -> torch.Tensor:
    """``D`` of a (B·F, C, *axes) tensor with frames folded into the batch: unfold to (B, C, F, *axes), D, fold."""
    bf, *rest = x.shape
    video = x.reshape(bf // num_frames, num_frames, *rest).transpose(1, 2)
    low = downsample(video, factors).transpose(1, 2)
    return low.reshape(-1, *low.shape[2:])


def _downsample_residual(residual: torch.Tensor, factors: tuple[int, ...], num_frames: Optional[int]) -> torch.Tensor:
    check_divisible(residual.shape, factors[-2:], "a ControlNet/adapter residual's (h, w)")
    return downsample(residual, factors) if num_frames is None else _downsample_folded(residual, factors, num_frames)


def _scale_time_ids(time_ids: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    n = time_ids.shape[-1]
    if n not in (5, 6):
        raise ValueError(f"expected SDXL time_ids with 6 entries (base) or 5 (refiner); got {n}")
    divisor = [fh, fw, fh, fw] + ([fh, fw] if n == 6 else [1])
    return time_ids / torch.tensor(divisor, dtype=time_ids.dtype, device=time_ids.device)


def lowres_conditioning(
    arguments: Mapping[str, Any], sample_shape: Sequence[int], factor: Factor, time_ids: str = "scale"
) -> dict[str, Any]:
    """The UNet arguments (by name) that differ in the low-res call, besides ``sample`` and ``timestep``.

    ``arguments`` are the UNet's arguments by name; ``sample_shape`` the high-res sample's shape, whose
    rank tells images (B, C, H, W) from videos (B, C, F, H, W); ``time_ids`` one of ``TIME_IDS``.
    """
    factors = axis_factors(factor, len(sample_shape))
    num_frames = sample_shape[2] if len(sample_shape) == 5 else None
    changed: dict[str, Any] = {}
    for name in RESIDUALS:
        value = arguments.get(name)
        if isinstance(value, torch.Tensor):
            changed[name] = _downsample_residual(value, factors, num_frames)
        elif value is not None:
            changed[name] = type(value)(_downsample_residual(r, factors, num_frames) for r in value)
    text = arguments.get("encoder_hidden_states")
    if num_frames is not None and factors[0] > 1 and text is not None and len(text) == sample_shape[0] * num_frames:
        changed["encoder_hidden_states"] = _downsample_folded(text, (factors[0], 1), num_frames)
    added = arguments.get("added_cond_kwargs")
    if time_ids == "scale" and added and added.get("time_ids") is not None:
        changed["added_cond_kwargs"] = {**added, "time_ids": _scale_time_ids(added["time_ids"], *factors[-2:])}
    return changed
