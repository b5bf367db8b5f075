"""Super-resolution networks as the cascade's φ: any model file ``spandrel`` loads (ESRGAN, Real-ESRGAN and its
Compact, SwinIR, HAT, DAT, 4x-UltraSharp, …, as ``.pth``, ``.safetensors`` or ``.ckpt``), the way ComfyUI and chaiNNer
load them.

spandrel is the optional extra ``hiresdiff[sr]``: it imports torchvision, whose wheels must match the installed torch
(the README's install section says which pair). Without it, :func:`load_upscaler` fails in one line saying so, before
any sampling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from hiresdiff.checks import first_line
from hiresdiff.core.tiling import in_tiles
from hiresdiff.methods.self_cascade import resize

INSTALL_HINT = "pip install 'hiresdiff[sr]' with a torchvision matching your torch"


def load_upscaler(path: Union[str, Path], tile: int = 512, margin: int = 32) -> SuperResolution:
    """The super-resolution model in ``path`` (a file spandrel reads), ready to serve as φ.

    Raises:
        FileNotFoundError: ``path`` is no file.
        ImportError: spandrel (or the torchvision it imports) is not installed.
        ValueError: spandrel cannot read the file, or it holds no 3-channel super-resolution model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"upscaler: {path} is not a file")
    try:
        import spandrel
    except ImportError as error:
        raise ImportError(f"upscaler: reading {path} needs spandrel ({INSTALL_HINT}): {first_line(error)}") from None
    try:
        descriptor = spandrel.ModelLoader().load_from_file(path)
    except Exception as error:
        raise ValueError(f"upscaler: spandrel cannot read {path}: {first_line(error)}") from None
    if not (
        isinstance(descriptor, spandrel.ImageModelDescriptor)
        and descriptor.scale >= 2
        and descriptor.input_channels == descriptor.output_channels == 3
    ):
        raise ValueError(
            f"upscaler: {path} holds a {descriptor.architecture.name} model for {descriptor.purpose}, not a "
            "3-channel super-resolution model (scale >= 2)"
        )
    return SuperResolution(descriptor, path.name, tile, margin)


@dataclass
class SuperResolution:
    """A spandrel ``ImageModelDescriptor`` as φ: ``sr(images, size)`` takes images (B, 3, H, W) in [-1, 1] to
    ``size``, applying the network (×``scale``) until both sides reach it, then resizing to exactly ``size`` (bicubic,
    antialiased when it shrinks).

    It runs on the images' device, in their dtype where the architecture supports it (else float32), in tiles of
    ``tile`` input pixels with ``margin`` pixels of context (:func:`hiresdiff.core.tiling.in_tiles`: the untiled
    result for a network whose receptive radius is at most ``margin``) unless spandrel says the architecture
    must not be tiled. On the ``meta`` device (``hiresdiff plan``, FLOP counts) it runs a weightless copy.
    """

    descriptor: Any
    name: str
    tile: int = 512
    margin: int = 32
    _meta: Any = field(default=None, repr=False)

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    @property
    def tiled(self) -> bool:
        from spandrel import ModelTiling

        return self.descriptor.tiling == ModelTiling.SUPPORTED

    def _dtype(self, dtype: torch.dtype) -> torch.dtype:
        supported = {torch.float16: self.descriptor.supports_half, torch.bfloat16: self.descriptor.supports_bfloat16}
        return dtype if supported.get(dtype, False) else torch.float32

    def _on(self, device: torch.device, dtype: torch.dtype):
        if device.type == "meta":
            if self._meta is None:
                self._meta = copy.deepcopy(self.descriptor).to(device="meta")
            return self._meta.to(dtype=dtype)
        return self.descriptor.to(device=device, dtype=dtype)

    @torch.no_grad()
    def once(self, images: torch.Tensor) -> torch.Tensor:
        """One pass of the network: images (B, 3, H, W) in [-1, 1] → (B, 3, scale·H, scale·W) in [-1, 1]."""
        dtype = self._dtype(images.dtype)
        network = self._on(images.device, dtype)
        unit = ((images.to(dtype) + 1) / 2).clamp(0, 1)  # spandrel's range is [0, 1]
        tile = self.tile if self.tiled else max(images.shape[-2:])
        out = in_tiles(network, unit, tile, self.margin, self.scale)
        return (out * 2 - 1).to(images.dtype)

    def __call__(self, images: torch.Tensor, size) -> torch.Tensor:
        size = tuple(size)
        while images.shape[-2] < size[0] or images.shape[-1] < size[1]:
            images = self.once(images)
        return resize(images, size, "bicubic").clamp(-1, 1)
