"""Wall time of every preset relative to naive sampling at the same size, on the embedded model.

    python benchmarks/recipe_time.py --scale 2 --num-images 8 --repeats 3

Runs are interleaved (naive, then each recipe, per repeat) so that load drift hits all alike; the
table gives the median seconds per image and the median of the per-repeat ratios to naive.
Writes benchmarks/results/recipe_time_<scale>x.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from hiresdiff.loading.pixel_model import load_pixel_model, sample
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.recipe import Recipe

METHODS = ("naive", "ug", "self-cascade", "freescale", "freescale+ug", "self-cascade+ug")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    size = 32 * args.scale
    labels = torch.arange(args.num_images) % unet.config.num_class_embeds
    times = {m: [] for m in METHODS}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up and is dropped
        for method in METHODS:
            start = time.perf_counter()
            sample(
                unet,
                scheduler,
                height=size,
                width=size,
                num_images=args.num_images,
                seed=repeat,
                steps=args.steps,
                class_labels=labels,
                recipe=Recipe.preset(method),
                progress=False,
            )
            if repeat:
                times[method].append((time.perf_counter() - start) / args.num_images)
    lines = [
        f"# Time per image relative to naive at {size}² (embedded model)\n",
        f"Made by `python benchmarks/recipe_time.py {' '.join(sys.argv[1:])}`: {args.num_images} images per run, "
        f"{args.steps} SDE-DPM-Solver++ steps (later cascade stages run 70 % of them), {args.repeats} interleaved "
        f"repeats, torch threads {torch.get_num_threads()}.\n",
        "| method | s/image (median) | ×naive (median) |",
        "|---|---|---|",
    ]
    for method in METHODS:
        ratios = [t / n for t, n in zip(times[method], times["naive"])]
        lines.append(f"| {method} | {statistics.median(times[method]):.3f} | {statistics.median(ratios):.2f} |")
    out = Path("benchmarks/results") / f"recipe_time_{args.scale}x.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
