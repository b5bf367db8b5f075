"""One encoder interface for pixels and latents (EDM2's ``encoder``), so the cascade does not care which.

``decode(z)`` gives an image in [-1, 1], ``encode(image)`` the model's space. Pixel models are the
identity; latent models go through their VAE with its scaling (and shift) factor, frame by frame for
videos, in fp32 when the VAE asks for it (``force_upcast``: SDXL's VAE overflows in fp16), tiled
for large images. The cascade's φ (:func:`upsample_pivot`) is then the same code for both:
``"latent"`` resizes z, ``"rgb"`` decodes, resizes the image and encodes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Optional

import torch

from hiresdiff.methods.self_cascade import CascadeConfig, resize

#: Tile the VAE above this many pixels: SDXL's whole-image decode (in fp32, its force_upcast) holds 12 GiB at 2048²
#: (``hiresdiff plan``), its tiled decode a fraction of that; 1024², the trained size, stays whole.
TILE_ABOVE_PIXELS = 1536 * 1536


def tiles(tiling: Optional[bool], pixels: int) -> bool:
    """Whether a VAE call on ``pixels`` pixels is tiled: as ``tiling`` says, or (``None``) above
    ``TILE_ABOVE_PIXELS``."""
    return tiling if tiling is not None else pixels > TILE_ABOVE_PIXELS


class PixelCodec:
    """The identity: a pixel-space model's samples are images."""

    scale_factor = 1

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image


class VaeCodec:
    """A diffusers ``AutoencoderKL``: z = (E(x).mode − shift)·scaling, x = D(z/scaling + shift); Qwen-Image's
    ``AutoencoderKLQwenImage`` the same with its per-channel ``latents_mean`` (shift) and 1/``latents_std``
    (scaling), an image passed as a clip of one frame; Wan's ``AutoencoderKLWan`` (the same normalisation) encodes
    and decodes a video as one clip, its frames causal in time (4k + 1 frames ↔ k + 1 latent frames).

    ``tiling``: ``True`` always tiles, ``False`` never, ``None`` tiles images above 1536² pixels. The VAE's
    own tiling switch is restored afterwards, and so is its dtype.
    """

    def __init__(self, vae, scale_factor: int, tiling: Optional[bool] = None):
        self.vae, self.scale_factor, self.tiling = vae, scale_factor, tiling
        config = vae.config
        self.frame_axis = config.get("latents_mean") is not None
        if self.frame_axis:  # Qwen-Image's video VAE: per-channel statistics, images as clips of one frame
            self.shift = torch.tensor(config.latents_mean).view(1, -1, 1, 1)
            self.scaling = 1 / torch.tensor(config.latents_std).view(1, -1, 1, 1)
        else:
            self.scaling = config.scaling_factor
            self.shift = config.get("shift_factor", None) or 0.0

    def _normalisation(self, like: torch.Tensor):
        """(shift, scaling) as numbers or per-channel tensors shaped for ``like`` (an image or a clip), on its
        device."""
        if not self.frame_axis:
            return self.shift, self.scaling
        shape = (1, -1) + (1,) * (like.ndim - 2)
        return self.shift.view(shape).to(like.device), self.scaling.view(shape).to(like.device)

    @contextmanager
    def _prepared(self, pixels: int):
        vae = self.vae
        tiling_was, dtype_was = getattr(vae, "use_tiling", False), vae.dtype
        tile = tiles(self.tiling, pixels)
        try:
            if tile and not tiling_was:
                vae.enable_tiling()
            if dtype_was == torch.float16 and getattr(vae.config, "force_upcast", False):
                vae.to(torch.float32)
            yield vae.dtype
        finally:
            if tile and not tiling_was:
                vae.disable_tiling()
            if vae.dtype != dtype_was:
                vae.to(dtype_was)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        clip = self.frame_axis and z.ndim == 5  # Wan's video VAE: the clip as one (its frames are causal in time)
        frames = z if clip else _fold_frames(z)
        shift, scaling = self._normalisation(frames)
        with self._prepared(frames.shape[-2] * frames.shape[-1] * self.scale_factor**2) as dtype:
            latents = (frames.to(dtype) / scaling + shift).to(dtype)
            if clip:
                return self.vae.decode(latents).sample.to(z.dtype)
            if self.frame_axis:
                image = self.vae.decode(latents.unsqueeze(2)).sample[:, :, 0]
            else:
                image = self.vae.decode(latents).sample
        return _unfold_frames(image.to(z.dtype), z)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        clip = self.frame_axis and image.ndim == 5
        frames = image if clip else _fold_frames(image)
        with self._prepared(frames.shape[-2] * frames.shape[-1]) as dtype:
            if clip:
                z = self.vae.encode(frames.to(dtype)).latent_dist.mode()
            elif self.frame_axis:
                z = self.vae.encode(frames.to(dtype).unsqueeze(2)).latent_dist.mode()[:, :, 0]
            else:
                z = self.vae.encode(frames.to(dtype)).latent_dist.mode()
        shift, scaling = self._normalisation(z)
        z = ((z - shift) * scaling).to(image.dtype)
        return z if clip else _unfold_frames(z, image)


def _fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) → (B·F, C, H, W); images pass through."""
    return x.transpose(1, 2).flatten(0, 1) if x.ndim == 5 else x


def _unfold_frames(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.ndim != 5:
        return x
    b, _, f = like.shape[:3]
    return x.reshape(b, f, *x.shape[1:]).transpose(1, 2)


def upsample_pivot(codec, z: torch.Tensor, size: Sequence[int], cascade: CascadeConfig) -> torch.Tensor:
    """φ(z₀^{r−1}) at ``size`` (the model's units): resize the latents, or (``space="rgb"``) decode → resize → encode,
    or (``upscaler``) decode → super-resolve → encode.

    The decoded full-size image lives only inside this call.
    """
    pixels = [n * codec.scale_factor for n in size]
    if cascade.upscaler is not None:
        decoded = codec.decode(z)
        return codec.encode(_unfold_frames(cascade.upscaler(_fold_frames(decoded), pixels), decoded))
    if cascade.space == "latent" or isinstance(codec, PixelCodec):
        return resize(z, size, cascade.upsample)
    return codec.encode(resize(codec.decode(z), pixels, cascade.upsample).clamp(-1, 1))
