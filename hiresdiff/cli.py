"""The ``hiresdiff`` command line: ``generate`` (the main job), ``data``, ``train`` and ``bench``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from hiresdiff import comparison as gen
from hiresdiff.integrations.schedulers import SCHEDULERS

DEFAULT_OUT = "hiresdiff-grid.png"


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample above the trained resolution and write one labelled PNG grid")
    p.add_argument("--model", default=None, help="local UNet2DModel folder (default: the embedded 32² emoji model), "
                   "or with --prompt any diffusers pipeline folder or hub id")
    p.add_argument("--scale", type=int, nargs="+", default=[2, 4], help="target sizes as multiples of the trained size (default: 2 4)")
    p.add_argument("--method", nargs="+", default=["naive", "ug"],
                   help=f"methods per scale: {', '.join(gen.METHODS)} or any 'a+b' composition (default: naive ug)")
    p.add_argument("--theta", type=float, default=1.0, help="UG guidance scale θ (default 1.0)")
    p.add_argument("--eta", type=float, default=1.0, help="UG is on for t >= (1-η)T (default 1.0: every step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-images", type=int, default=3, help="rows of the grid")
    p.add_argument("--steps", type=int, default=gen.DEFAULT_STEPS)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=gen.DEFAULT_SCHEDULER)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"PNG to write (default {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    latent = p.add_argument_group("text-to-image/video pipelines (SD 1.x/2.x, SDXL, AnimateDiff): used with --prompt")
    latent.add_argument("--prompt", default=None, help="run the --model pipeline on this prompt instead of the pixel model")
    latent.add_argument("--negative-prompt", default=None)
    latent.add_argument("--height", type=int, default=None, help="output height in pixels (the target size)")
    latent.add_argument("--width", type=int, default=None, help="output width in pixels (the target size)")
    latent.add_argument("--num-frames", type=int, default=None, help="frames of a video pipeline")
    latent.add_argument("--factor", type=parse_factor, default=2,
                        help="UG frame factor for video pipelines as F,1,1 (more frames than trained); spatial factors "
                        "follow from --height/--width and the model's trained size")
    latent.add_argument("--guidance-scale", type=float, default=7.5)
    latent.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    latent.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on cuda, fp32 elsewhere")
    p.set_defaults(run=run_generate)


DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def parse_factor(text: str):
    """'2' → 2, '2,1,1' → (2, 1, 1)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"factor must be an int or comma-separated ints; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def run_pipeline_generate(args) -> None:
    """``--prompt``: one column per method at --height x --width from the same seed (frames as rows for video)."""
    import torch

    from hiresdiff.grid import check_writable, labelled_grid, save_png
    from hiresdiff.integrations.pipeline_loading import generate_from_folder

    if args.model is None or args.height is None or args.width is None:
        raise ValueError("--prompt needs --model (a pipeline folder or hub id), --height and --width")
    check_writable(args.out, args.force)
    recipes = {m: gen.recipe_for(m, args.theta, args.eta) for m in args.method}
    if args.factor != 2:  # a frame factor for video pipelines: temporal UG
        recipes = {m: r if r.ug is None else dataclasses.replace(r, ug=dataclasses.replace(r.ug, factor=args.factor))
                   for m, r in recipes.items()}
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    columns = []
    for method in args.method:
        columns.append(generate_from_folder(
            args.model, args.prompt, args.height, args.width, recipe=recipes[method], steps=args.steps,
            seed=args.seed, guidance_scale=args.guidance_scale, device=args.device, dtype=dtype,
            num_frames=args.num_frames, negative_prompt=args.negative_prompt))
    labels = [f"{args.width}x{args.height} {m}" + (f" θ={args.theta:g} η={args.eta:g}" if recipes[m].ug else "")
              for m in args.method]
    path = save_png(labelled_grid(columns, labels, max(96, min(512, args.width))), args.out, force=args.force)
    print(f"wrote {path}  (columns: {', '.join(labels)}; seed {args.seed})")


def run_generate(args) -> None:
    from hiresdiff.grid import check_writable, labelled_grid, save_png

    if args.prompt is not None:
        return run_pipeline_generate(args)
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


def add_train_upsamplers_parser(sub) -> None:
    from hiresdiff.models import train_upsamplers

    p = sub.add_parser("train-upsamplers", help="train Self-Cascade feature upsamplers for the embedded model (resumable)")
    train_upsamplers.add_arguments(p)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="the UG reproduction benchmark against held-out real emoji (writes benchmarks/results/)")
    p.add_argument("--model", default=None, help="local 32² UNet2DModel folder (default: the embedded model)")
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument("--num-images", type=int, default=None,
                   help="images per method at 2x; m-x above 2 uses num_images*4/m^2 (default 96; --quick: 8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; --quick: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="sampler (default: the Settings default)")
    p.add_argument("--scale", type=int, nargs="+", default=None, help="scales to run (default: 2 4)")
    p.add_argument("--inception", default=None, help="FID Inception-v3 weights file (pt_inception-2015-12-05) for real FID")
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--suite", choices=("ug", "methods"), default="ug",
                   help="ug: the UG reproduction rows; methods: every preset, composition, strength sweep and ablation")
    p.add_argument("--upsamplers", nargs="+", default=None, metavar="SCALE=FOLDER",
                   help="trained feature upsamplers for the tuned Self-Cascade row, e.g. 2=hiresdiff/models/emoji32_upsamplers_64")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 images, 2 steps, 2x only, one θ")
    p.set_defaults(run=run_bench)


def run_bench(args) -> None:
    from hiresdiff.eval.benchmark import Settings, run

    given = {k: v for k, v in (("num_images", args.num_images), ("steps", args.steps), ("scheduler", args.scheduler),
                                ("scales", tuple(args.scale or ()) or None)) if v is not None}
    upsamplers = None
    if args.upsamplers:
        try:
            upsamplers = {int(k): v for k, v in (item.split("=", 1) for item in args.upsamplers)}
        except ValueError:
            raise ValueError(f"--upsamplers takes SCALE=FOLDER items; got {args.upsamplers}") from None
    common = dict(model=args.model, data=args.data, seed=args.seed, inception=args.inception, out_dir=args.out_dir,
                  command="hiresdiff bench " + " ".join(sys.argv[2:]), suite=args.suite, upsamplers=upsamplers, **given)
    run(Settings.quick(**common) if args.quick else Settings(**common))
    print(f"wrote {args.out_dir}/{args.suite}_benchmark.md, .json and the {args.suite}_grid_*.png grids")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hiresdiff", description="Generate above the trained resolution of diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_data_parser(sub)
    add_train_parser(sub)
    add_train_upsamplers_parser(sub)
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
