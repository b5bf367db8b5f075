"""A fixed random conv net as a feature space for FD/KID that needs no download."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiresdiff.eval.metrics._checks import _check_images, _check_int


class RandomConvFeatures(nn.Module):
    """A fixed, seeded, randomly initialised conv net: a feature space that needs no download.

    What it measures: colour, texture and layout statistics at several scales. Images are
    resized to ``resolution``² (bilinear, antialiased; default 64²), then

    * colour layout: the mean colour of each cell of a 4×4 grid (48 values), scaled by 1/4 so
      the block weighs like one colour vector instead of sixteen;
    * texture at 4 scales: 4 stages of [3×3 conv with random He-normal weights (reflect
      padding) → ReLU], each stage after a 2× average pool of the previous one (widths 16, 32,
      64, 128; receptive fields ≈ 3, 8, 18, 38 px at 64²), and per channel the spatial mean and
      standard deviation (480 values) — the random-filter texture statistics of Ustyuzhaninov
      et al. 2017 ("What does it take to generate natural textures?"). First-stage filters have
      zero spatial sum per input channel, so flat regions of any colour give the same
      response: texture features see structure (edges, coloured edges, blobs), and colour
      enters mainly through the layout block.

    ``dim = 528``. Blur, noise, colour shifts, extra or missing objects and changed object
    size all move these statistics. Measured on 400 vs 400 Noto emoji at 64² (FD): two
    disjoint draws 0.03; σ≈1 px blur 0.42; 32²→64² bilinear upsampling 0.40 (nearest 0.15);
    RGB channels rotated 0.20; two half-size emoji side by side 0.74. Defects finer than one
    pixel at ``resolution`` are averaged away by the resize: evaluate 128² images with
    ``resolution=128`` to see 128²-scale detail.

    What it does not measure: semantic similarity learned from ImageNet — it does not know
    that two different dogs are both dogs, nor which shapes make a plausible face, and its
    numbers are not comparable with published FID/KID values (which use
    :class:`InceptionFeatures`). Use it for relative comparisons within one study: same
    ``seed``, same ``resolution``, same number of samples.

    The weights depend only on ``seed`` (CPU ``torch.Generator``), so every machine builds the
    same network.
    """

    WIDTHS = (16, 32, 64, 128)
    LAYOUT_GRID = 4

    def __init__(self, *, resolution: int = 64, seed: int = 0, batch_size: int = 256):
        super().__init__()
        self.resolution = _check_int(resolution, "resolution", 16)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        c_in = 3
        for i, c_out in enumerate(self.WIDTHS):
            weight = torch.randn(c_out, c_in, 3, 3, generator=gen)
            if i == 0:  # zero spatial sum per input channel: flat colour gives no response
                weight = weight - weight.mean(dim=(2, 3), keepdim=True)
            weight = weight * math.sqrt(2.0 / (9 * c_in)) / weight.std()
            bias = 0.1 * torch.randn(c_out, generator=gen)
            self.register_buffer(f"weight{i}", weight)
            self.register_buffer(f"bias{i}", bias)
            c_in = c_out
        self.requires_grad_(False)

    @property
    def dim(self) -> int:
        """Feature dimension: 3·4² layout + 2·(16+32+64+128) texture = 528."""
        return 3 * self.LAYOUT_GRID**2 + 2 * sum(self.WIDTHS)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        out = [F.adaptive_avg_pool2d(x, self.LAYOUT_GRID).flatten(1) / self.LAYOUT_GRID]
        h = x
        for i in range(len(self.WIDTHS)):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = F.pad(h, (1, 1, 1, 1), mode="reflect")
            h = F.relu(F.conv2d(h, getattr(self, f"weight{i}"), getattr(self, f"bias{i}")))
            out += [h.mean(dim=(2, 3)), h.std(dim=(2, 3), correction=0)]
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, dim) float32 of images (N, 3, H, W) in [-1, 1]."""
        _check_images(images, "images")
        dev = self.weight0.device
        return torch.cat(
            [self._features(chunk.to(dev, torch.float32)).cpu() for chunk in images.split(self.batch_size)]
        )
