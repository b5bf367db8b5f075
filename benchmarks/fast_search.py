"""The fast recipe's design space at 4× on the embedded pixel model, beyond `hiresdiff bench --suite fast`.

    python benchmarks/fast_search.py --num-images 24 --seed 0
    python benchmarks/fast_search.py --num-images 24 --seed 1 --only FreeScale 'fast (default)' 'k=3 s=0.5'
    python benchmarks/fast_search.py --num-images 48 --seed 0 --only FreeScale 'fast (default)'

The bench's suite found that at 4× on the pixel model the fast recipe stays blurrier than FreeScale (its SWD is
worse at 0.25× the FLOPs). This searches the parts a few steps at 128² could change at the same cost: the
restart strength (0.3, 0.5, 0.7), φ's interpolation (bicubic, bilinear, nearest), FreeScale's detail control
(α 1, 2, 4, off), dilation, scale fusion, and fewer steps in the middle stage for more at the target. Every row
samples held-out labels from the same noise (the seed's pick of the test set, as ``hiresdiff bench`` draws it)
and is scored against the 128² test images with the bench's metrics; FLOPs are counted on ``meta`` relative to
direct sampling. ``--seed`` picks another image set and noise: the spread between seeds is the noise of a
comparison. Writes ``benchmarks/results/fast_search/search_4x_seed<seed>_<n>images.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def candidates():
    from hiresdiff.eval.benchmark import Method
    from hiresdiff.recipe import Recipe

    fast = Recipe.fast
    rows = {"FreeScale": Recipe.freescale(), "fast (default)": fast()}
    rows.update({f"k=3 s={s:g}": fast(3, s) for s in (0.5, 0.7)})
    rows.update({f"k=3 s=0.5 φ {mode}": fast(3, 0.5, upsample=mode) for mode in ("bilinear", "nearest")})
    rows.update({"k=3 s=0.3 φ nearest": fast(3, 0.3, upsample="nearest")})
    rows.update({f"k=3 s=0.5 α {a:g}": fast(3, 0.5, detail_alpha=a) for a in (1.0, 4.0)})
    rows.update({f"k=3 s={s:g} with fusion": fast(3, s, fusion=True) for s in (0.3, 0.5)})
    rows.update({"k=3 s=0.3 φ nearest with fusion": fast(3, 0.3, upsample="nearest", fusion=True)})
    rows.update(
        {
            "k=3 s=0.5 no detail control": fast(3, 0.5, detail_alpha=None),
            "k=3 s=0.5 no dilation": fast(3, 0.5, dilation=False),
            "k=2 then 4 at the target, s=0.5": fast(2, 0.5, target_steps=4),
            "k=1 then 4 at the target, s=0.3": fast(1, 0.3, target_steps=4),
        }
    )
    return [Method(name, 4, recipe) for name, recipe in rows.items()]


def main() -> None:
    import torch

    from hiresdiff.batch import write_json_atomically
    from hiresdiff.data import emoji
    from hiresdiff.eval import benchmark, metrics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=24, help="images per row at 128²")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", default=None, help="rows to run, by name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default="benchmarks/results/fast_search")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in candidates() if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in methods}
    if unknown:
        raise SystemExit(f"--only: unknown rows {sorted(unknown)}; known: {[m.name for m in candidates()]}")
    n = args.num_images
    settings = benchmark.Settings(suite="fast", scales=(4,), num_images=4 * n, seed=args.seed)
    test = {r: emoji.load(r, "test") for r in (32, 128)}
    pick = torch.randperm(len(test[32].images), generator=torch.Generator().manual_seed(args.seed))[:n]
    sampler = benchmark.PixelSampler(settings, pick, test[32].labels, 128)
    features = metrics.RandomConvFeatures(resolution=128, seed=0)
    trained = sampler.sample(None, 32, n)
    out = Path(args.out_dir) / f"search_4x_seed{args.seed}_{n}images.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/fast_search.py " + shlex.join(sys.argv[1:])
    results = {
        "commands": [command],
        "num_images": n,
        "seed": args.seed,
        "steps": settings.steps,
        "scheduler": settings.scheduler,
        "rows": {},
    }
    if out.exists():  # rows of an earlier run with the same images are kept (a later --only run adds to them)
        earlier = json.loads(out.read_text())
        results["rows"] = earlier["rows"]
        results["commands"] = [c for c in earlier["commands"] if c != command] + [command]
    for method in methods:
        start = time.perf_counter()
        images = sampler.sample(method, 128, n)
        seconds = (time.perf_counter() - start) / n
        scores = benchmark.score(images, test[128].images, trained, features)
        results["rows"][method.name] = {
            **scores,
            "FLOPs ×direct": sampler.relative_flops(method, 128),
            "s/image": seconds,
        }
        print(method.name, {k: round(v, 3) for k, v in results["rows"][method.name].items()}, flush=True)
        write_json_atomically(results, out)
    write_markdown(results, out.with_suffix(".md"))


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        f"# The fast recipe at 4× on the pixel model: seed {results['seed']}, {results['num_images']} images at 128²\n",
        f"Made by `{'` and `'.join(results['commands'])}` "
        f"({results['steps']} {results['scheduler']} steps at the trained size; "
        "metrics as in `hiresdiff bench`; FLOPs counted on `meta`, relative to direct sampling at 128²; s/image is "
        "wall time on a machine that may have been shared, not a measurement).\n",
        "| row | FD rand | SWD mean | SWD 128 | detail ×real | paired RMSE | FLOPs ×direct | s/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["rows"].items():
        lines.append(
            f"| {name} | {r['FD rand']:.3f} | {r['SWD mean']:.1f} | {r['SWD 128']:.1f} | {r['detail ×real']:.2f} | "
            f"{r['paired RMSE']:.3f} | {r['FLOPs ×direct']:.3f} | {r['s/image']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
