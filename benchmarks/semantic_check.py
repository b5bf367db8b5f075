"""Does the semantic metric score the methods at 4x as eyes do? The embedded pixel model's comparison grid (every
method from the same seeds; the cascades upscale the trained-size column itself) at 4x, each method's semantic
agreement with the enlarged trained-size samples (bootstrap 95 % interval over images) and a contact sheet.

    python benchmarks/semantic_check.py --num-images 32

Writes ``benchmarks/results/semantic_check/``: ``semantic_4x.md``, ``semantic_4x.json`` and ``sheet_4x.png`` (rows:
seeds; columns: the trained-size sample, then every method, at full size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hiresdiff.comparison import comparison
from hiresdiff.eval import semantic_agreement
from hiresdiff.eval.metrics import bootstrap, semantic_matches
from hiresdiff.grid import labelled_grid, save_image
from hiresdiff.image_upscale import image_tensor

METHODS = ("naive", "ug", "self-cascade", "freescale", "freescale+ug", "fast", "fast+ug")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--out-dir", default="benchmarks/results/semantic_check")
    args = p.parse_args(argv)
    command = " ".join(["python benchmarks/semantic_check.py", *(sys.argv[1:] if argv is None else argv)])
    columns, labels = comparison(
        scales=[args.scale], methods=METHODS, seed=args.seed, num_images=args.num_images, steps=args.steps
    )
    trained = image_tensor(columns[0])
    rows = {}
    for label, images in zip(labels[1:], columns[1:]):
        same = semantic_matches(image_tensor(images), trained)  # classified once; the bootstrap resamples the pairs
        interval = bootstrap(lambda idx: float(same[idx].float().mean()), len(same), resamples=200)
        rows[label] = {"agreement": interval.estimate, "low": interval.low, "high": interval.high}
    shuffled = torch.roll(trained, 1, dims=0)  # unrelated pairs: the floor
    high = image_tensor(columns[1])
    rows["unrelated pairs (shifted by one seed)"] = {
        "agreement": semantic_agreement(high, shuffled),
        "low": None,
        "high": None,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = [
        f"Made by `{command}` (embedded pixel model, {args.num_images} images, {args.steps} steps, {args.scale}x).",
        "",
        "| method | semantic agreement | 95 % interval |",
        "|---|---|---|",
    ]
    for label, row in rows.items():
        interval = "" if row["low"] is None else f"[{row['low']:.2f}, {row['high']:.2f}]"
        table.append(f"| {label} | {row['agreement']:.2f} | {interval} |")
    (out / f"semantic_{args.scale}x.md").write_text("\n".join(table) + "\n")
    (out / f"semantic_{args.scale}x.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    cell = max(image.width for image in columns[-1])
    save_image(labelled_grid(columns, labels, cell), out / f"sheet_{args.scale}x.png", force=True)
    print("\n".join(table))


if __name__ == "__main__":
    main()
