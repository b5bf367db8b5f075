"""A small emoji image cache of synthetic pictures, with the keys :func:`hiresdiff.data.emoji.build` writes: for the
clip builder and the motion adapter's training, whose code is the same on the real cache (which needs Debian's
emoji font)."""

import numpy as np
import torch

from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji


def synthetic_images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` 128² RGB "emoji": a disc of a random colour with three smaller discs of other colours (eyes and a
    mouth; smooth pictures, as emoji are) on white."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    images = np.full((count, 128, 128, 3), 255, np.uint8)
    for image in images:
        for cy, cx, r in (
            (64, 64, 50),
            *((rng.integers(40, 90), rng.integers(35, 95), rng.integers(6, 14)) for _ in range(3)),
        ):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(0, 230, 3)
    return images


def fake_image_cache(folder, count: int = 10) -> None:
    """An image cache with the keys :func:`hiresdiff.data.emoji.build` writes (and its first half held out)."""
    images = synthetic_images(count)
    small = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    np.savez(
        folder / emoji.CACHE_NAME,
        img128=images,
        img64=downsample(small, 2).permute(0, 2, 3, 1).numpy(),
        img32=downsample(small, 4).permute(0, 2, 3, 1).numpy(),
        is_test=np.arange(count) < count // 2,
        name=np.array([f"emoji {i}" for i in range(count)]),
    )
