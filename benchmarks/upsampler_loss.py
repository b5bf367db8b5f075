"""Held-out loss of trained feature upsamplers against zero (tuning-free) ones on the emoji test split.

    python benchmarks/upsampler_loss.py --upsamplers hiresdiff/models/emoji32_upsamplers_64 --resolution 64

Same images, times t ∈ (0, K] and noise for both: the loss of eq. 12 in the model's prediction type.
Writes benchmarks/results/upsampler_loss_<res>.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hiresdiff.data import emoji
from hiresdiff.loading.pixel_model import load_pixel_model
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.training.feature_upsamplers import upsampler_loss
from hiresdiff.unet.feature_upsamplers import FeatureUpsamplers


@torch.no_grad()
def held_out_loss(unet, scheduler, upsamplers, images, labels, strength: float, seed: int, batch: int = 16) -> float:
    generator = torch.Generator().manual_seed(seed)
    k = int(strength * scheduler.config.num_train_timesteps)
    total = 0.0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        t = torch.randint(1, k + 1, (len(x),), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        total += upsampler_loss(unet, scheduler, upsamplers, x, t, noise, labels[i : i + batch]).item() * len(x)
    return total / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upsamplers", required=True)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--strength", type=float, default=0.7)
    p.add_argument("--repeats", type=int, default=3, help="noise/time draws per image set (seeds 0..N-1)")
    args = p.parse_args()
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "ddpm")
    data = emoji.load(args.resolution, "test")
    images, labels = data.images[: args.num_images], data.labels[: args.num_images]
    trained = FeatureUpsamplers.from_pretrained(args.upsamplers)
    zero = FeatureUpsamplers.for_unet(unet, hidden_channels=trained.config.hidden_channels)
    rows = []
    for seed in range(args.repeats):
        rows.append([held_out_loss(unet, scheduler, u, images, labels, args.strength, seed) for u in (zero, trained)])
    out = Path("benchmarks/results") / f"upsampler_loss_{args.resolution}.md"
    lines = [
        f"# Held-out loss of the feature upsamplers at {args.resolution}²\n",
        f"Made by `python benchmarks/upsampler_loss.py {' '.join(sys.argv[1:])}`: {len(images)} test images, "
        f"t uniform in (0, {args.strength:g}·T], v-prediction MSE (eq. 12), same draws for both rows.\n",
        "| draw | zero upsamplers (tuning-free) | trained | change |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i} | {z:.5f} | {t:.5f} | {100 * (t - z) / z:+.1f} % |" for i, (z, t) in enumerate(rows)]
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
