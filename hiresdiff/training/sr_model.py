"""Training recipe of the shipped super-resolution network (``hiresdiff/models/emoji_sr``): our world's
"SDXL + BSRGAN" baseline and the owned models' default upscaler.

The network is spandrel's Real-ESRGAN Compact (SRVGGNetCompact: a 3×3 convolution stack with PReLU, a pixel shuffle,
and the nearest-neighbour enlargement of the input added), ×2, built from spandrel's own class and saved as a plain
``.safetensors`` state dict, so that it loads through :func:`hiresdiff.loading.upscaler.load_upscaler` like a
user's file. Pairs are training-split emoji at 128² and 64² (the high-resolution side) and their exact 2×2 block
averages (the low-resolution side: how the data set makes its 64² and 32² images from the 128² renders, so the
model's trained-size samples look like its inputs), as random crops, half of the inputs with a little Gaussian noise
(σ ≤ 0.03: what generated images carry). L1 loss, AdamW, EMA; resumable through the shared loop.
The held-out PSNR against bicubic enlargement is written into the shipped folder's ``training.json``.

    hiresdiff train-sr --ship hiresdiff/models/emoji_sr    (needs the 'sr' extra)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hiresdiff.core.resample import downsample
from hiresdiff.data import emoji
from hiresdiff.training.loop import Phase, add_run_arguments, export_run, start_run

#: The shipped network's file name in its folder.
WEIGHTS_NAME = "2x_emoji_compact.safetensors"


def compact_network(features: int, convolutions: int, scale: int = 2) -> torch.nn.Module:
    """spandrel's Real-ESRGAN Compact with ``features`` channels and ``convolutions`` body convolutions."""
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convolutions, upscale=scale)


def training_pair(hr: torch.Tensor, crop: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high): a random ``crop``² crop of the high-resolution images (even offsets, so the block grid is the
    data set's) and its 2×2 block average, half of it noised with σ uniform in [0, 0.03]."""
    size = hr.shape[-1]
    top, left = (2 * int(v) for v in torch.randint(0, (size - crop) // 2 + 1, (2,), generator=generator))
    high = hr[..., top : top + crop, left : left + crop]
    low = downsample(high, 2)
    noisy = torch.rand(len(low), 1, 1, 1, generator=generator) < 0.5
    sigma = 0.03 * torch.rand(len(low), 1, 1, 1, generator=generator)
    return (low + noisy * sigma * torch.randn(low.shape, generator=generator)).clamp(-1, 1), high


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2), averaged over the images."""
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(4 / mse)).mean())


@torch.no_grad()
def held_out_psnr(network: torch.nn.Module, data_path=None) -> dict:
    """PSNR of the network and of bicubic enlargement on the held-out emoji, 32²→64² and 64²→128²."""
    scores = {}
    for size in (64, 128):
        high = emoji.load(size, "test", data_path).images
        low = downsample(high, 2)
        network.eval()
        sr = (network((low + 1) / 2).clamp(0, 1) * 2 - 1).float()
        bicubic = F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
        scores[f"{size // 2}->{size}"] = {"network": round(psnr(sr, high), 2), "bicubic": round(psnr(bicubic, high), 2)}
    return scores


def train(args) -> None:
    run_dir = start_run(args)
    sets = [emoji.load(size, "train", args.data).images for size in (128, 64)]
    network = compact_network(args.features, args.convolutions)
    phase = Phase("sr", {"model": network}, run_dir, args, args.steps, args.lr)
    generator = torch.Generator().manual_seed(args.seed + phase.step)

    def loss() -> torch.Tensor:
        images = sets[int(torch.randint(2, (1,), generator=generator))]
        pick = torch.randint(len(images), (args.batch_size,), generator=generator)
        low, high = training_pair(images[pick], args.crop, generator)
        network.train()
        return F.l1_loss(network((low + 1) / 2) * 2 - 1, high)

    def export() -> None:
        ema = phase.ema_modules()["model"]
        scores = held_out_psnr(ema, args.data)

        def save(folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, folder / WEIGHTS_NAME)

        info = {
            "parameters": sum(p.numel() for p in ema.parameters()),
            "held_out_psnr_db": scores,
            "command": f"hiresdiff train-sr --steps {args.steps} --batch-size {args.batch_size} --crop {args.crop} "
            f"--features {args.features} --convolutions {args.convolutions} --lr {args.lr} --seed {args.seed}",
        }
        export_run(args, run_dir, phase, save, info)

    phase.run(loss, args.save_every, args.log_every, export)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji_sr")  # the shared options, with this recipe's defaults below
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--crop", type=int, default=48, help="side of the high-resolution training crops (even)")
    p.add_argument("--features", type=int, default=32, help="the Compact network's channels")
    p.add_argument("--convolutions", type=int, default=8, help="the Compact network's body convolutions")
    p.set_defaults(lr=1e-3, warmup=200, batch_size=32)
    return p
