"""Fine-detail energy relative to real images: a direct reading of grain (> 1) and blur (< 1)."""

from __future__ import annotations

import torch

from hiresdiff.eval.metrics._checks import _check_images
from hiresdiff.eval.metrics.swd import laplacian_pyramid


def detail_energies(images: torch.Tensor) -> torch.Tensor:
    """Per image (N,), the mean squared value of the finest Laplacian band ``L_0 = x − up(down(x))``.

    The band holds the detail of about one pixel's scale (:func:`laplacian_pyramid`), so additive
    pixel noise raises it and any blur lowers it.
    """
    _check_images(images, "images")
    return laplacian_pyramid(images.detach().float().cpu(), 2)[0].double().pow(2).mean(dim=(1, 2, 3))


def detail_energy(images: torch.Tensor) -> float:
    """:func:`detail_energies` over a set: their mean (the images have one size)."""
    return float(detail_energies(images).mean())


def detail_energy_ratio(images: torch.Tensor, reference: torch.Tensor) -> float:
    """``detail_energy(images) / detail_energy(reference)``, at the same size.

    1 means the set has as much pixel-scale detail as the reference (real images); above 1 it is
    grainier, below 1 blurrier. It is a statistic of each set alone, so unlike SWD it does not
    say whether the detail is the right kind; the band is linear in the image, so scaling every
    image's detail by ``c`` scales the ratio by ``c²``.
    """
    _check_images(reference, "reference")
    if images.shape[2:] != reference.shape[2:]:
        raise ValueError(
            f"images and reference must have the same spatial size; got "
            f"{tuple(images.shape[2:])} and {tuple(reference.shape[2:])}"
        )
    ref = detail_energy(reference)
    if ref == 0:
        raise ValueError("reference has no fine detail (a constant set): the ratio is undefined")
    return detail_energy(images) / ref
