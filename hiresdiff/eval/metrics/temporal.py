"""Temporal consistency of clips: how much consecutive frames change, and how much of that change is not motion.

Clips are float tensors ``(N, F, 3, H, W)`` in ``[-1, 1]``. Each metric is computed per clip, on every pair of
consecutive frames, at a scale that makes sizes comparable (distances in 32²-pixel units: a block and a search
radius that grow with the size):

* :func:`frame_difference_energy` — the mean squared change between consecutive frames: how much moves (a still
  clip 0; a flickering or shuffled one high).
* :func:`warping_error` — the mean absolute change left after warping each frame onto the next by the best
  translation of each block within the search radius (block matching): near 0 for motion the warp explains (pans,
  bounces, crossings; rotation and zoom leave a little), high for content that appears, vanishes or jumps (a
  shuffled clip, flicker, objects that change identity). The "warping error after the known motion" of video
  models' evaluations, with the motion estimated, so that generated clips, whose motion is their own, are scored
  as the real ones are.
* :func:`flicker` — the mean absolute change of a frame's mean brightness between consecutive frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Block side and search radius at 32² (scaled with the clip's side).
BLOCK, RADIUS = 8, 2


def _check_clips(clips: torch.Tensor, name: str = "clips") -> None:
    if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or clips.shape[2] != 3 or clips.shape[1] < 2:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ValueError(f"{name} must be a tensor (N, F >= 2, 3, H, W) in [-1, 1]; got {shape}")


def frame_difference_energy(clips: torch.Tensor) -> torch.Tensor:
    """Per clip, the mean over consecutive frame pairs and pixels of (f_{t+1} − f_t)², shape (N,)."""
    _check_clips(clips)
    return (clips[:, 1:] - clips[:, :-1]).pow(2).flatten(1).mean(1)


def flicker(clips: torch.Tensor) -> torch.Tensor:
    """Per clip, the mean over consecutive frame pairs of |mean(f_{t+1}) − mean(f_t)|, shape (N,)."""
    _check_clips(clips)
    brightness = clips.flatten(2).mean(2)
    return (brightness[:, 1:] - brightness[:, :-1]).abs().mean(1)


def warping_error(clips: torch.Tensor) -> torch.Tensor:
    """Per clip, the mean over consecutive frame pairs of the block-matched residual, shape (N,): each block of
    f_{t+1} (side ``BLOCK``·H/32) is compared with f_t translated by every integer offset within ``RADIUS``·H/32
    pixels (f_t padded with its edge values), and the smallest mean absolute difference is kept."""
    _check_clips(clips)
    n, f, c, h, w = clips.shape
    scale = max(1, h // 32)
    block, radius = BLOCK * scale, RADIUS * scale
    if h % block or w % block:
        raise ValueError(f"clips' frames must be multiples of {block} pixels at {h}x{w}; got {h}x{w}")
    before = clips[:, :-1].reshape(-1, c, h, w)
    after = clips[:, 1:].reshape(-1, c, h, w)
    padded = F.pad(before, (radius,) * 4, mode="replicate")
    best = None
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            shifted = padded[:, :, dy : dy + h, dx : dx + w]
            residual = F.avg_pool2d((after - shifted).abs().mean(1, keepdim=True), block)  # per block
            best = residual if best is None else torch.minimum(best, residual)
    return best.view(n, f - 1, -1).mean((1, 2))
