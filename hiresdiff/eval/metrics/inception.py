"""The FID Inception-v3 network and its pool3 features, from a local weights file."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiresdiff.eval.metrics._checks import _check_images, _check_int

# FID Inception-v3 -----------------------------------------------------------------------------
# The network of TensorFlow's FID code ("inception-2015-12-05" graph) in the module layout and
# parameter names of pytorch-fid's `fid_inception_v3` (= torchvision's Inception3 with
# num_classes=1008, aux_logits=False, and the FID patches), so its weights file
# pt_inception-2015-12-05-6726825d.pth (and torch-fidelity's weights-inception-2015-12-05-*.pth,
# same names) load with strict key checking. Neither package can be used here: both import
# torchvision (torch-fidelity's package __init__ imports its CLIP extractor, which does).
# Architecture after pytorch-fid / torch-fidelity (Apache-2.0).


class _Conv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):  # TF average pooling ignores padded zeros
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(c_in, 64, 1)
        self.branch5x5_1 = _Conv(c_in, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(c_in, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(c_in, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class _InceptionB(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = _Conv(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(c_in, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionC(nn.Module):
    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = _Conv(c_in, 192, 1)
        self.branch7x7_1 = _Conv(c_in, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(c_in, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(c_in, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg3(x))], 1)


class _InceptionD(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = _Conv(c_in, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(c_in, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionE(nn.Module):
    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # FID graph's Mixed_7c uses max pooling in its pool branch
        self.branch1x1 = _Conv(c_in, 320, 1)
        self.branch3x3_1 = _Conv(c_in, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(c_in, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(c_in, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (TF "inception-2015-12-05"), randomly initialised until weights load.

    ``forward`` takes a (N, 3, 299, 299) tensor already scaled to [-1, 1] and returns the
    2048-d pool3 features. Parameter names match pytorch-fid's ``fid_inception_v3``.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, 32)
        self.Mixed_5c = _InceptionA(256, 64)
        self.Mixed_5d = _InceptionA(288, 64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, 128)
        self.Mixed_6c = _InceptionC(768, 160)
        self.Mixed_6d = _InceptionC(768, 160)
        self.Mixed_6e = _InceptionC(768, 192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, max_pool=False)
        self.Mixed_7c = _InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # logits; unused for FID but part of the weights file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


class InceptionFeatures(nn.Module):
    """2048-d pool3 features of the standard FID Inception-v3, from a local weights file.

    ``weights_path``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or torch-fidelity's
    ``weights-inception-2015-12-05-6726825d.pth``, same parameter names), a plain state dict.
    Nothing is downloaded: get the file yourself and pass its path.

    Preprocessing follows pytorch-fid for images saved as 8-bit PNGs: ``[-1, 1]`` →
    8-bit levels (``quantize=True``, as if the samples had been written to PNG and read back)
    → bilinear resize to 299² (``align_corners=False``, no antialias) → ``2·x/255 − 1``.
    torch-fidelity resizes with a TF1-exact bilinear kernel instead; its FID differs from
    pytorch-fid's by a small amount, so compare numbers from one tool only.
    """

    dim = 2048

    def __init__(self, weights_path, *, quantize: bool = True, batch_size: int = 32, device="cpu"):
        super().__init__()
        if weights_path is None or not os.path.isfile(os.fspath(weights_path)):
            raise FileNotFoundError(
                f"weights_path={weights_path!r} is not a file: InceptionFeatures needs the FID Inception-v3 "
                f"weights (pt_inception-2015-12-05-6726825d.pth as used by pytorch-fid) on disk; "
                f"hiresdiff never downloads them. Use RandomConvFeatures for a feature space without weights."
            )
        self.quantize = quantize
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.net = FIDInceptionV3()
        state = torch.load(os.fspath(weights_path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"weights_path={weights_path!r} does not hold a state dict")
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        missing, unexpected = self._key_mismatch(state)
        if missing or unexpected:
            raise ValueError(
                f"weights_path={weights_path!r} is not an FID Inception-v3 state dict: "
                f"missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                f"unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
            )
        self.net.load_state_dict(state, strict=False)  # keys checked above; tolerates absent num_batches_tracked
        self.net.eval().requires_grad_(False)
        self.net.to(device)

    def _key_mismatch(self, state: dict) -> tuple[list[str], list[str]]:
        expected = {k for k in self.net.state_dict() if not k.endswith("num_batches_tracked")}
        given = {k for k in state if not k.endswith("num_batches_tracked")}
        return sorted(expected - given), sorted(given - expected)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → the network's (N, 3, 299, 299) input in [-1, 1]."""
        x = (images.float() + 1.0) * 127.5
        if self.quantize:
            x = x.round()
        x = x.clamp(0.0, 255.0)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features (N, 2048) float32 of images (N, 3, H, W) in [-1, 1]."""
        _check_images(images, "images")
        dev = next(self.net.parameters()).device
        return torch.cat([self.net(self.preprocess(c.to(dev))).cpu() for c in images.split(self.batch_size)])
