"""ProGAN's multi-scale sliced Wasserstein distance on Laplacian-pyramid patches."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from hiresdiff.eval.metrics._checks import _check_images, _check_int

# 5-tap binomial kernel [1, 4, 6, 4, 1] / 16: its outer product is ProGAN's / cv2.pyrDown's
# 5×5 Gaussian.
_BINOMIAL5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Separable 5×5 binomial blur with mirror (reflect-101) borders, as scipy 'mirror' / cv2."""
    c = x.shape[1]
    k = (_BINOMIAL5 * scale).to(x)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, scale=2.0)[:, :, : size[0], : size[1]]  # 2 per axis = ProGAN's 4× kernel


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid (Burt & Adelson 1983) of ``x`` (N, C, H, W), finest level first.

    ``G_0 = x``, ``G_{i+1} = decimate(blur(G_i))``; level ``i < levels-1`` is the band
    ``G_i − up(G_{i+1})`` and the last level is the low-pass ``G_{levels-1}``. The blur is the
    5×5 binomial kernel with mirror borders and ``up`` is zero insertion followed by 4× that
    kernel: ProGAN's ``generate_laplacian_pyramid`` (cv2.pyrDown / pyrUp).
    """
    gauss = [x]
    for _ in range(levels - 1):
        gauss.append(_pyr_down(gauss[-1]))
    bands = [g - _pyr_up(g_next, g.shape[-2:]) for g, g_next in zip(gauss[:-1], gauss[1:])]
    return bands + [gauss[-1]]


def _level_sizes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def _level_name(h: int, w: int) -> str:
    return str(h) if h == w else f"{h}x{w}"


def _draw_patches(level: torch.Tensor, patch_size: int, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """``per_image`` random patches per image, fully inside it: (N·per_image, C, p, p)."""
    n, c, h, w = level.shape
    m = n * per_image
    ys = torch.randint(0, h - patch_size + 1, (m,), generator=gen)
    xs = torch.randint(0, w - patch_size + 1, (m,), generator=gen)
    img = torch.arange(n).repeat_interleave(per_image)
    off = torch.arange(patch_size)
    hwc = level.permute(0, 2, 3, 1)
    patches = hwc[img[:, None, None], (ys[:, None] + off)[:, :, None], (xs[:, None] + off)[:, None, :]]
    return patches.permute(0, 3, 1, 2)  # (m, C, p, p)


def _normalize_descriptors(desc: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return ((desc - mean) / std.clamp_min(1e-8)).flatten(1)


def _channel_stats(desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # per colour channel over all patches and all patch pixels (ProGAN: axis=(0, 2, 3), ddof 0)
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True, correction=0)
    return mean, std


def _swd_1d(a: torch.Tensor, b: torch.Tensor, num_projections: int, gen: torch.Generator) -> float:
    """Mean over random unit directions of W1 between the sorted projections of a and b (M, D)."""
    m, d = a.shape
    dirs = torch.randn(d, num_projections, generator=gen, dtype=torch.float64).to(a.dtype)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    chunk = max(1, min(num_projections, (1 << 23) // max(m, 1)))
    total = 0.0
    for start in range(0, num_projections, chunk):
        d_chunk = dirs[:, start : start + chunk]
        pa = torch.sort(a @ d_chunk, dim=0).values
        pb = torch.sort(b @ d_chunk, dim=0).values
        total += float((pa - pb).abs().double().sum())
    return total / (m * num_projections)


@torch.no_grad()
def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    patch_size: int = 7,
    patches_per_image: int = 64,
    num_projections: int = 512,
    levels: Optional[int] = None,
    seed: int = 0,
    normalize: str = "per_set",
) -> dict[str, float]:
    """Multi-scale sliced Wasserstein distance of Karras et al. 2018 (ProGAN, §5), ×10³.

    For each image set, every image is split into a Laplacian pyramid (:func:`laplacian_pyramid`;
    by default levels go down to the last one whose sides are >= 16 px, as ProGAN). At each level
    ``patches_per_image`` random ``patch_size × patch_size`` patches are drawn per image; each
    colour channel of the level's descriptors is normalised by its mean and standard deviation
    over all patches and patch pixels, and the patches are flattened to vectors of
    ``3·patch_size²``. Then, over ``num_projections`` random unit directions θ,

        SWD = mean_θ  (1/M) Σ_i | sort(A·θ)_i − sort(B·θ)_i |

    (the 1-D Wasserstein-1 distance between the projected descriptor sets), reported × 10³.

    ``normalize='per_set'`` (default) is ProGAN's rule: each set is normalised with its *own*
    per-channel statistics (``finalize_descriptors`` in ProGAN's
    ``metrics/sliced_wasserstein.py``, applied to reals and fakes separately). It makes the
    metric blind to a global per-channel affine colour change (offset or contrast) of a whole
    set. ``normalize='joint'`` uses the statistics of both sets together, which keeps that
    sensitivity; its values are not comparable with ProGAN's.

    Returns ``{level_name: swd, ..., 'mean': average over levels}``; a level is named by its
    resolution, ``'32'`` for 32×32 (``'32x48'`` for a non-square level), finest first: a 32²
    set gives ``'32', '16', 'mean'``; 128² gives ``'128', '64', '32', '16', 'mean'``.

    Reproducibility and symmetry: patch positions are drawn from a generator seeded with
    ``seed`` separately for each set, so two sets with the same size and image count share
    patch positions (identical sets give exactly 0, paired sets get common random numbers), and
    ``SWD(a, b) == SWD(b, a)``. Sets with different image counts are brought to the same number
    of descriptors by a seeded random subsample of the larger one. ProGAN's defaults were 128
    patches per image and 4×128 directions on 16k images; fewer images raise the noise floor,
    so compare a value with the SWD of two disjoint draws of the reference set.
    """
    _check_images(a, "a")
    _check_images(b, "b")
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(f"a and b must have the same spatial size; got {tuple(a.shape[2:])} and {tuple(b.shape[2:])}")
    patch_size = _check_int(patch_size, "patch_size", 1)
    patches_per_image = _check_int(patches_per_image, "patches_per_image", 1)
    num_projections = _check_int(num_projections, "num_projections", 1)
    if normalize not in ("per_set", "joint"):
        raise ValueError(f"normalize must be 'per_set' or 'joint'; got {normalize!r}")
    h, w = a.shape[2:]
    if levels is None:
        levels = 1
        while min(_level_sizes(h, w, levels + 1)[-1]) >= 16:
            levels += 1
    levels = _check_int(levels, "levels", 1)
    sizes = _level_sizes(h, w, levels)
    if min(sizes[-1]) < patch_size:
        raise ValueError(
            f"levels={levels} makes the coarsest level {sizes[-1]} smaller than patch_size={patch_size}: "
            f"use fewer levels or a smaller patch_size"
        )

    a = a.detach().float().cpu()
    b = b.detach().float().cpu()
    pyr_a, pyr_b = laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)
    gen_a = torch.Generator().manual_seed(seed)
    gen_b = torch.Generator().manual_seed(seed)
    result: dict[str, float] = {}
    for i, (la, lb, (lh, lw)) in enumerate(zip(pyr_a, pyr_b, sizes)):
        da = _draw_patches(la, patch_size, patches_per_image, gen_a)
        db = _draw_patches(lb, patch_size, patches_per_image, gen_b)
        if da.shape[0] != db.shape[0]:  # seeded subsample of the larger set (depends on sizes only)
            m = min(da.shape[0], db.shape[0])
            sub = torch.Generator().manual_seed(seed + 7919 * (i + 1))
            if da.shape[0] > m:
                da = da[torch.randperm(da.shape[0], generator=sub)[:m]]
            else:
                db = db[torch.randperm(db.shape[0], generator=sub)[:m]]
        if normalize == "per_set":
            da = _normalize_descriptors(da, *_channel_stats(da))
            db = _normalize_descriptors(db, *_channel_stats(db))
        else:
            stats = _channel_stats(torch.cat([da, db]))
            da, db = _normalize_descriptors(da, *stats), _normalize_descriptors(db, *stats)
        proj_gen = torch.Generator().manual_seed(seed + 104729 * (i + 1))
        result[_level_name(lh, lw)] = 1e3 * _swd_1d(da, db, num_projections, proj_gen)
    result["mean"] = float(np.mean(list(result.values())))
    return result
