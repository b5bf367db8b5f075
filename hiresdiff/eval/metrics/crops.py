"""Detail at the native scale: distances between trained-size crops of high-resolution images.

Whole-image metrics shrink a 128² result to the feature network's input and so average away what a method adds at
128². The peers measure detail on crops at the model's native size instead (FreeScale's FID_c, LSRNA's pFID): here
the same, with our feature spaces. From every image, ``per_image`` random ``size``×``size`` crops (the same positions
for both sets when they have the same size, from a seeded generator) are compared: the Fréchet distance of their
random-convolution features (:class:`~hiresdiff.eval.metrics.random_features.RandomConvFeatures` at ``size``, no
resize) and, with :func:`crop_swd`, the sliced Wasserstein distance of their Laplacian patches.
"""

from __future__ import annotations

from typing import Optional

import torch

from hiresdiff.eval.metrics._checks import _check_images, _check_int
from hiresdiff.eval.metrics.frechet import frechet_distance
from hiresdiff.eval.metrics.random_features import RandomConvFeatures
from hiresdiff.eval.metrics.swd import sliced_wasserstein


def random_crops(images: torch.Tensor, size: int, per_image: int = 4, seed: int = 0) -> torch.Tensor:
    """``per_image`` random ``size``² crops of each image (N, 3, H, W): (N·per_image, 3, size, size), image-major."""
    _check_images(images, "images")
    _check_int(size, "size", 1)
    _check_int(per_image, "per_image", 1)
    height, width = images.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"size {size} is larger than the images ({height}x{width})")
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(height - size + 1, (len(images), per_image), generator=generator)
    lefts = torch.randint(width - size + 1, (len(images), per_image), generator=generator)
    return torch.stack(
        [
            images[i, :, top : top + size, left : left + size]
            for i in range(len(images))
            for top, left in zip(tops[i].tolist(), lefts[i].tolist())
        ]
    )


def crop_features(
    images: torch.Tensor, size: int, per_image: int = 4, seed: int = 0, features: Optional[RandomConvFeatures] = None
) -> torch.Tensor:
    """Random-convolution features (N, per_image, d) of :func:`random_crops` of each image (``features`` at ``size``,
    by default seed 0's)."""
    features = features or RandomConvFeatures(resolution=size)
    with torch.no_grad():
        return features(random_crops(images, size, per_image, seed)).reshape(len(images), per_image, -1)


def crop_fd(
    fake: torch.Tensor,
    real: torch.Tensor,
    size: int,
    per_image: int = 4,
    seed: int = 0,
    features: Optional[RandomConvFeatures] = None,
) -> float:
    """Fréchet distance between random-convolution features of ``size``² crops of ``fake`` and of ``real``."""
    features = features or RandomConvFeatures(resolution=size)
    return frechet_distance(
        crop_features(fake, size, per_image, seed, features).flatten(0, 1),
        crop_features(real, size, per_image, seed + 1, features).flatten(0, 1),
    )


def crop_swd(fake: torch.Tensor, real: torch.Tensor, size: int, per_image: int = 4, seed: int = 0) -> float:
    """Mean sliced Wasserstein distance (×10³) between the Laplacian patches of ``size``² crops of both sets."""
    return sliced_wasserstein(
        random_crops(fake, size, per_image, seed), random_crops(real, size, per_image, seed + 1), seed=seed
    )["mean"]
