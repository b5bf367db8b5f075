"""Quality of a 32² emoji model against the held-out real emoji, and the real-vs-real floor.

    python benchmarks/model_quality.py [--model PATH] [--num-images 480] [--steps 20]

Samples ``--num-images`` images at the trained size with the class labels of the test split,
then reports the sliced Wasserstein distance (7×7 Laplacian-pyramid patches, levels 32/16/8 =
fine/mid/coarse, ×1e3) and the random-conv Fréchet distance against the test split, next to
the same numbers for real train images against the test split. The model card's quality bar:
every SWD level within 2× of the floor. Writes benchmarks/results/model_quality.md and a grid
of samples per Unicode group, model_samples_32.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hiresdiff.data import emoji
from hiresdiff.eval import metrics
from hiresdiff.eval.benchmark import sample_batched
from hiresdiff.grid import labelled_grid, save_image
from hiresdiff.loading.pixel_model import initial_noise, load_pixel_model, to_pil
from hiresdiff.models import EMBEDDED_MODEL_DIR

RESULTS = Path(__file__).parent / "results"


def scores(images, real, features) -> dict:
    out = metrics.sliced_wasserstein(images, real, levels=3)
    out["FD rand"] = metrics.frechet_distance(features(images), features(real))
    out["detail ×real"] = metrics.detail_energy_ratio(images, real)
    return out


def group_grid(samples, labels, group_names, rows: int = 8):
    """One labelled column per Unicode group with its first ``rows`` samples, enlarged to 96²."""
    columns = [to_pil(samples[labels == g][:rows]) for g in range(len(group_names))]
    keep = [j for j, column in enumerate(columns) if column]
    return labelled_grid([columns[j] for j in keep], [group_names[j] for j in keep], 96)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(EMBEDDED_MODEL_DIR))
    p.add_argument("--data", default=None)
    p.add_argument("--num-images", type=int, default=480)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--scheduler", default="sde-dpm++")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/model_quality.py", *(sys.argv[1:] if argv is None else argv)])
    unet, scheduler = load_pixel_model(args.model, args.scheduler)
    test, train = emoji.load(32, "test", args.data), emoji.load(32, "train", args.data)
    n = min(args.num_images, len(test.images))
    gen = torch.Generator().manual_seed(args.seed)
    labels = test.labels[torch.randperm(len(test.images), generator=gen)[:n]] if unet.config.num_class_embeds else None
    start = time.time()
    samples = sample_batched(
        unet, scheduler, initial_noise(n, 3, 32, 32, args.seed), labels, None, args.steps, 64, args.seed
    )
    seconds = time.time() - start
    features = metrics.RandomConvFeatures(resolution=32, seed=0)
    real = scores(train.images[torch.randperm(len(train.images), generator=gen)[:n]], test.images, features)
    model = scores(samples, test.images, features)
    info_path = Path(args.model) / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    levels = [k for k in model if k not in ("mean", "FD rand", "detail ×real")]
    lines = [
        "# Embedded model quality at 32²\n",
        f"Made by `{command}`: {n} samples ({args.steps} {args.scheduler} steps, seed {args.seed}, "
        f"{seconds / n:.3f} s/image) vs the {len(test.images)} held-out test emoji; "
        f"floor = {n} train emoji vs the same test set. "
        f"Model: training step {info.get('step', '?')}, {info.get('wall_seconds', 0) / 3600:.1f} h of training. "
        "detail ×real = energy of the finest Laplacian band relative to the test emoji (> 1 grainy, < 1 blurry).\n",
        "| set | SWD " + " | SWD ".join(levels) + " | FD rand | detail ×real |",
        "|---" * (len(levels) + 3) + "|",
    ]
    for label, row in (("real train vs test (floor)", real), ("model vs test", model)):
        lines.append(
            f"| {label} | "
            + " | ".join(f"{row[k]:.1f}" for k in levels)
            + f" | {row['FD rand']:.3f} | {row['detail ×real']:.2f} |"
        )
    ratio = {k: model[k] / real[k] for k in levels}
    lines.append(
        "\nRatio model/floor per SWD level: "
        + ", ".join(f"{k}: {v:.2f}×" for k, v in ratio.items())
        + (" — meets the 2× bar." if max(ratio.values()) <= 2 else " — does not meet the 2× bar yet.")
    )
    (out / "model_quality.md").write_text("\n".join(lines) + "\n")
    grid = (
        group_grid(samples, labels, test.group_names)
        if labels is not None
        else labelled_grid([to_pil(samples[:8])], ["samples"], 96)
    )
    save_image(grid, out / "model_samples_32.png", force=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
