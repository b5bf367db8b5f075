"""Running networks on large images tile by tile.

:func:`in_tiles` cuts the image into tiles that partition it, runs the network on each with ``margin`` pixels of
context on every side (clamped at the image's edges), and keeps only each tile's own part of the output. A network
whose output at a pixel depends on the input within ``margin`` pixels (its receptive radius: a stack of n 3×3
convolutions has radius n) gives exactly the untiled result, since every kept output pixel sees the input the untiled
run sees, the image's own edges included; one with a larger or global receptive field (attention over the image)
gives an approximation whose seams shrink as ``margin`` grows.

:func:`feathered_tiles` cuts an image into overlapping tiles of a denoiser's trained size whose outputs are blended
with Gaussian weights that sum to one at every pixel (the tiled refinement of a cascade's later stage,
:mod:`hiresdiff.hooks.tiled_denoising`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def in_tiles(
    network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tile: int, margin: int, scale: int
) -> torch.Tensor:
    """``network`` (B, C, h, w) → (B, C', scale·h, scale·w) applied to ``images`` (B, C, H, W) in tiles of ``tile``
    pixels with ``margin`` pixels of context; one call when the image fits a tile."""
    if tile < 1 or margin < 0:
        raise ValueError(f"tile must be >= 1 and margin >= 0; got tile={tile}, margin={margin}")
    height, width = images.shape[-2:]
    if height <= tile and width <= tile:
        return network(images)
    rows = []
    for top in range(0, height, tile):
        row = []
        for left in range(0, width, tile):
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(height, top + tile + margin), min(width, left + tile + margin)
            out = network(images[..., y0:y1, x0:x1])
            dy, dx = (top - y0) * scale, (left - x0) * scale
            h, w = (min(tile, height - top)) * scale, (min(tile, width - left)) * scale
            row.append(out[..., dy : dy + h, dx : dx + w])
        rows.append(torch.cat(row, dim=-1))
    return torch.cat(rows, dim=-2)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Starts of the fewest tiles of ``tile`` covering ``length`` with at least ``overlap`` shared between neighbours,
    spread evenly from 0 to ``length − tile`` on multiples of ``multiple`` (a packed transformer's patch; ``length``
    and ``tile`` are multiples of it), one tile at 0 when it covers all."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile); got overlap={overlap}, tile={tile}")
    if length <= tile:
        return [0]
    length, tile = length // multiple, tile // multiple  # in units of the multiple
    overlap = min(-(-overlap // multiple), tile - 1)
    count = math.ceil((length - overlap) / (tile - overlap))
    return [multiple * round(i * (length - tile) / (count - 1)) for i in range(count)]


def gaussian_ramp(tile: int, dtype=torch.float64) -> torch.Tensor:
    """A tile's feathering profile along one side: a Gaussian centred on the tile, σ = tile/4 (Tiled Diffusion's and
    MultiDiffusion's Gaussian weights), so a tile's edge counts e^−2 ≈ 0.14 of its centre."""
    x = torch.arange(tile, dtype=dtype) + 0.5 - tile / 2
    return torch.exp(-0.5 * (x / (tile / 4)) ** 2)


def feathered_tiles(
    size: Sequence[int], tile: Sequence[int], overlap: Sequence[int], multiple: int = 1
) -> list[tuple[slice, slice, torch.Tensor]]:
    """The tiles of an image of ``size`` (H, W) (:func:`tile_starts`, on multiples of ``multiple``): (rows, columns,
    weight) with the weights (h, w) normalised so that at
    every pixel the weights of the tiles covering it sum to one: Σ_k w_k(p) = 1, w_k = g_k / Σ_j g_j with g the
    separable Gaussian of :func:`gaussian_ramp` (float64)."""
    ramps = [gaussian_ramp(t) for t in tile]
    starts = [tile_starts(n, t, o, multiple) for n, t, o in zip(size, tile, overlap)]
    total = torch.zeros(tuple(size), dtype=torch.float64)
    tiles = []
    for top in starts[0]:
        for left in starts[1]:
            rows, cols = slice(top, top + tile[0]), slice(left, left + tile[1])
            weight = ramps[0][: rows.stop - top, None] * ramps[1][None, : cols.stop - left]
            total[rows, cols] += weight
            tiles.append((rows, cols, weight))
    return [(rows, cols, weight / total[rows, cols]) for rows, cols, weight in tiles]
