"""The ``hiresdiff`` command line: ``generate`` (the main job), ``data``, ``train`` and ``bench``."""

from __future__ import annotations

import argparse
import sys

from hiresdiff import generate as gen
from hiresdiff.integrations.schedulers import SCHEDULERS

DEFAULT_OUT = "hiresdiff-grid.png"


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample above the trained resolution and write one labelled PNG grid")
    p.add_argument("--model", default=None, help="local UNet2DModel folder (default: the embedded 32² emoji model)")
    p.add_argument("--scale", type=int, nargs="+", default=[2, 4], help="target sizes as multiples of the trained size (default: 2 4)")
    p.add_argument("--method", nargs="+", choices=gen.METHODS, default=list(gen.METHODS), help="methods per scale (default: naive ug)")
    p.add_argument("--theta", type=float, default=1.0, help="UG guidance scale θ (default 1.0)")
    p.add_argument("--eta", type=float, default=1.0, help="UG is on for t >= (1-η)T (default 1.0: every step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=4, help="rows of the grid")
    p.add_argument("--steps", type=int, default=gen.DEFAULT_STEPS)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=gen.DEFAULT_SCHEDULER)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(run=run_generate)


def run_generate(args) -> None:
    from hiresdiff.grid import check_writable, labelled_grid, save_png

    check_writable(args.out, args.force)
    columns, labels = gen.comparison(args.model, scales=args.scale, methods=args.method, theta=args.theta,
                                     eta=args.eta, seed=args.seed, num_images=args.num_images, steps=args.steps,
                                     scheduler=args.scheduler)
    cell = max(image.width for image in columns[-1])
    path = save_png(labelled_grid(columns, labels, max(cell, 96)), args.out, force=args.force)
    print(f"wrote {path}  (columns: {', '.join(labels)}; seed {args.seed})")


def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="render the Noto emoji data set (128², 64², 32²) into the data directory")
    p.add_argument("--data-dir", default=None, help="default: $HIRESDIFF_DATA_DIR or ~/.cache/hiresdiff")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache exists")
    p.set_defaults(run=run_data)


def run_data(args) -> None:
    from hiresdiff.data.emoji import build

    print(f"wrote {build(args.data_dir, force=args.force)}")


def add_train_parser(sub) -> None:
    from hiresdiff.models import train_emoji

    p = sub.add_parser("train", help="train (or resume) the embedded emoji model")
    train_emoji.add_arguments(p).set_defaults(run=train_emoji.train)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="the UG reproduction benchmark against held-out real emoji (writes benchmarks/results/)")
    p.add_argument("--model", default=None, help="local 32² UNet2DModel folder (default: the embedded model)")
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument("--num-images", type=int, default=None, help="images per method (default 256; --quick: 8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; --quick: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inception", default=None, help="FID Inception-v3 weights file (pt_inception-2015-12-05) for real FID")
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 images, 2 steps, 2x only, one θ")
    p.set_defaults(run=run_bench)


def run_bench(args) -> None:
    from hiresdiff.eval.benchmark import Settings, run

    given = {k: v for k, v in (("num_images", args.num_images), ("steps", args.steps)) if v is not None}
    common = dict(model=args.model, data=args.data, seed=args.seed, inception=args.inception, out_dir=args.out_dir,
                  command="hiresdiff bench " + " ".join(sys.argv[2:]), **given)
    run(Settings.quick(**common) if args.quick else Settings(**common))
    print(f"wrote {args.out_dir}/ug_benchmark.md, ug_theta_sweep.png, ug_grid_*.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiresdiff", description="Generate above the trained resolution of diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"hiresdiff: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hiresdiff: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
