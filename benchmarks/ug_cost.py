"""Cost of Upsample Guidance on the embedded pixel model: time and peak memory vs naive sampling.

    python benchmarks/ug_cost.py [--model PATH] [--repeats 7] [--num-images 4] [--steps 20]

Measures, at 2× (64², k = 4) and 4× (128², k = 16):
* the wall-time ratio UG / naive at the same size and steps (median of interleaved runs, η = 1 and 0.6);
* the ratio of one trained-size UNet call to one target-size call (median of interleaved calls);
* the bound of the paper, overhead ≤ η·(low-res call / high-res call), against the measured overhead;
* peak resident memory of a whole run (each configuration in a fresh process).
Writes benchmarks/results/ug_cost.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from hiresdiff.loading.pixel_model import load_pixel_model, sample
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.models import EMBEDDED_MODEL_DIR
from hiresdiff.recipe import Recipe

RESULT = Path(__file__).parent / "results" / "ug_cost.md"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def unet_call_ratio(unet, scale: int, num_images: int, repeats: int) -> float:
    """Median over interleaved pairs of t(one trained-size call) / t(one scale× call)."""
    low, high = torch.randn(num_images, 3, 32, 32), torch.randn(num_images, 3, 32 * scale, 32 * scale)
    t = torch.full((num_images,), 500.0)
    labels = torch.zeros(num_images, dtype=torch.long) if unet.config.num_class_embeds else None
    ratios = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t_low = timed(lambda: unet(low, t, class_labels=labels))
            t_high = timed(lambda: unet(high, t, class_labels=labels))
            ratios.append(t_low / t_high)
    return statistics.median(ratios[1:])  # the first pair warms up


def sampling_ratio(unet, scheduler, scale: int, eta: float, args) -> tuple[float, float]:
    """Median naive time and median UG/naive ratio over interleaved runs."""
    labels = torch.zeros(args.num_images, dtype=torch.long) if unet.config.num_class_embeds else None
    kw = dict(
        height=32 * scale,
        width=32 * scale,
        num_images=args.num_images,
        steps=args.steps,
        class_labels=labels,
        progress=False,
    )
    ug = Recipe(ug=UpsampleGuidanceConfig(theta=1.0, eta=eta), nested_ug=False)  # one level of factor `scale`
    naive_times, ratios = [], []
    for i in range(args.repeats + 1):
        t_naive = timed(lambda: sample(unet, scheduler, seed=i, **kw))
        t_ug = timed(lambda: sample(unet, scheduler, seed=i, recipe=ug, **kw))
        if i:
            naive_times.append(t_naive)
            ratios.append(t_ug / t_naive)
    return statistics.median(naive_times), statistics.median(ratios)


PEAK_SCRIPT = """
import json, resource, sys, torch
from hiresdiff.loading.pixel_model import load_pixel_model, sample
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig
from hiresdiff.recipe import Recipe
model, scale, ug, n, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "ug", int(sys.argv[4]), int(sys.argv[5])
unet, scheduler = load_pixel_model(model, "dpm++")
labels = torch.zeros(n, dtype=torch.long) if unet.config.num_class_embeds else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sample(unet, scheduler, height=32 * scale, width=32 * scale, num_images=n, steps=steps, class_labels=labels, \
progress=False,
       recipe=Recipe(ug=UpsampleGuidanceConfig(), nested_ug=False) if ug else None)
print(json.dumps({"before_kib": before, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_memory(model: str, scale: int, method: str, args) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, model, str(scale), method, str(args.num_images), str(args.steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(EMBEDDED_MODEL_DIR))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=str(RESULT))
    args = p.parse_args(argv)
    unet, scheduler = load_pixel_model(args.model, "dpm++")
    command = "python benchmarks/ug_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Cost of Upsample Guidance (pixel model)\n",
        f"Made by `{command}` on {torch.get_num_threads()} CPU threads; "
        f"batch {args.num_images}, {args.steps} DPM-Solver++ "
        f"steps, medians of {args.repeats} interleaved runs. "
        "Overhead = UG/naive − 1; bound = η·(low-res call / high-res call).\n",
        "| size | k | η | naive s/run | UG/naive | overhead | low/high call | bound η·low/high | "
        "peak RSS naive MiB | peak RSS UG MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scale in (2, 4):
        call = unet_call_ratio(unet, scale, args.num_images, args.repeats)
        mem = {m: peak_memory(args.model, scale, m, args)["peak_kib"] / 1024 for m in ("naive", "ug")}
        for eta in (1.0, 0.6):
            naive_s, ratio = sampling_ratio(unet, scheduler, scale, eta, args)
            lines.append(
                f"| {32 * scale}² | {scale * scale} | {eta:g} | {naive_s:.2f} | {ratio:.3f} | {ratio - 1:+.1%} | "
                f"{call:.3f} | {eta * call:.1%} | {mem['naive']:.0f} | {mem['ug']:.0f} |"
            )
            print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
