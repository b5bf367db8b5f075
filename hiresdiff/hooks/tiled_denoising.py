"""Tiled refinement: a denoiser call above the trained size made as calls on overlapping tiles of the trained size,
their outputs blended with Gaussian feathering (PixelRush's and Tiled Diffusion's patch denoising).

    D(z)(p) = Σ_k w_k(p) · D(z|_k)(p),   Σ_k w_k(p) = 1   (:func:`hiresdiff.core.tiling.feathered_tiles`)

Each tile is a trained-size call, so the denoiser's working memory is the tile's whatever the target size; the
model sees the prompt as the pipeline gives it (the same conditioning on every tile) and, on a flow transformer,
positions of a trained-size image (the family's layout rebuilds a tile's position ids from 0). What ties the tiles
into one picture is the cascade around them: the restart from the upsampled previous stage, FreeScale's detail
control toward its low-pass, or Upsample Guidance, whose trained-size call sees the whole image (this hook sits
inside UG's, so that call passes through untiled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from hiresdiff.core.tiling import feathered_tiles
from hiresdiff.hooks.base import DenoiserCallHook, attach, detach

TILES_HOOK = "hiresdiff_tiles"

#: Call arguments that carry whole-image features a tile cannot be given (ControlNet's and T2I-Adapter's residuals).
WHOLE_IMAGE_ARGUMENTS = (
    "down_block_additional_residuals",
    "mid_block_additional_residual",
    "down_intrinsic_block_additional_residuals",
    "controlnet_block_samples",
    "controlnet_single_block_samples",
    "block_controlnet_hidden_states",
)


class UNetGrid:
    """A UNet's call as a grid: its ``sample`` (B, C, h, w) or a video's (B, C, F, h, w)."""

    def input_grid(self, arguments: dict) -> torch.Tensor:
        return arguments["sample"]

    def with_input(self, arguments: dict, z: torch.Tensor) -> dict:
        return {**arguments, "sample": z}

    def to_grid(self, output: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return output

    def from_grid(self, z: torch.Tensor) -> torch.Tensor:
        return z


class TiledDenoisingHook(DenoiserCallHook):
    """Makes each call of the denoiser whose grid exceeds ``tile`` (h0, w0) as feathered calls on tiles of that size
    overlapping by at least ``overlap`` (a share of the tile), starting on multiples of ``multiple`` (the denoiser's
    size multiple: a packed transformer's patch is never cut); smaller calls pass through. ``layout``: the flow
    transformer's (:mod:`hiresdiff.denoisers.layouts`), ``None`` for a UNet."""

    def __init__(self, tile: Sequence[int], overlap: float, layout=None, multiple: int = 1):
        super().__init__()
        self.tile, self.overlap, self.multiple = tuple(int(n) for n in tile), overlap, multiple
        self.grid = layout if layout is not None else UNetGrid()

    def new_forward(self, module, *args, **kwargs):
        arguments = self.arguments(module, args, kwargs)
        z = self.grid.input_grid(arguments)
        size = tuple(z.shape[-2:])
        if size[0] <= self.tile[0] and size[1] <= self.tile[1]:
            return self.fn_ref.original_forward(*args, **kwargs)
        for name in WHOLE_IMAGE_ARGUMENTS:
            if arguments.get(name) is not None:
                raise ValueError(f"tiles: the call's {name} holds whole-image features a tile cannot take")
        tile = tuple(min(t, n) for t, n in zip(self.tile, size))
        overlap = tuple(min(round(self.overlap * t), t - 1) for t in tile)
        blended, output = None, None
        for rows, cols, weight in feathered_tiles(size, tile, overlap, self.multiple):
            output = self.fn_ref.original_forward(**self.grid.with_input(arguments, z[..., rows, cols]))
            part = self.grid.to_grid(_sample(output), tile)
            if blended is None:
                blended = torch.zeros((*part.shape[:-2], *size), device=part.device, dtype=part.dtype)
            blended[..., rows, cols] += part * weight.to(device=part.device, dtype=part.dtype)
        return _with_sample(output, self.grid.from_grid(blended))


def _sample(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _with_sample(output, sample: torch.Tensor) -> Any:
    return (sample, *output[1:]) if isinstance(output, tuple) else replace(output, sample=sample)


def attach_tiles(denoiser, tile: Sequence[int], overlap: float, layout=None, multiple: int = 1) -> None:
    attach(denoiser, TiledDenoisingHook(tile, overlap, layout, multiple), TILES_HOOK)


def remove_tiles(denoiser) -> None:
    detach(denoiser, TILES_HOOK)
