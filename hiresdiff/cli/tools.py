"""The tool commands: ``data`` (the emoji data set), the training commands (``train``, ``train-pipeline``,
``train-flux``, ``train-upsamplers``, ``train-semantic``, ``train-sr``, ``train-student``), ``bench`` and ``ui``."""

from __future__ import annotations

import sys
from typing import Optional

from hiresdiff.checks import check_scales
from hiresdiff.cli.choices import BENCH_SUITES, SR_SUITES, check_at_least_one, check_part_options
from hiresdiff.sampling.schedulers import SCHEDULERS


def add_data_parser(sub) -> None:
    p = sub.add_parser(
        "data",
        help="render the Noto emoji data set (128², 64², 32²) and its clips (known motion, 8 frames) into the data "
        "directory",
    )
    p.add_argument("--data-dir", default=None, help="default: $HIRESDIFF_DATA_DIR or ~/.cache/hiresdiff")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache exists")
    p.set_defaults(run=run_data)


def run_data(args) -> None:
    from hiresdiff.data import emoji, emoji_clips

    print(f"wrote {emoji.build(args.data_dir, force=args.force)}")
    print(f"wrote {emoji_clips.build(args.data_dir, force=args.force)}")


TRAINING_COMMANDS = {  # command: (module of hiresdiff.training with add_arguments and train, help)
    "train": ("pixel_model", "train (or resume) the embedded emoji model"),
    "train-pipeline": ("latent_model", "train (or resume) the emoji-latent text-to-image pipeline"),
    "train-flux": ("flux_model", "train (or resume) the emoji-flux FLUX-architecture pipeline"),
    "train-upsamplers": (
        "feature_upsamplers",
        "train Self-Cascade feature upsamplers for the embedded model (resumable)",
    ),
    "train-semantic": ("semantic_classifier", "train (or resume) the semantic metric's emoji-subgroup classifier"),
    "train-sr": ("sr_model", "train (or resume) the shipped 2x super-resolution network (needs the 'sr' extra)"),
    "train-student": ("few_step_student", "distill (or resume) emoji-latent's few-step LCM-LoRA student"),
    "train-motion": ("motion_adapter", "train (or resume) emoji-video's motion adapter on emoji-latent"),
}


def add_training_parser(sub, command: str, with_options: bool = True) -> None:
    """One of :data:`TRAINING_COMMANDS`; its options come from its module, which loads torch: ``with_options=False``
    lists the command without them (for ``hiresdiff --help``)."""
    module_name, help_text = TRAINING_COMMANDS[command]
    p = sub.add_parser(command, help=help_text)
    if with_options:
        import importlib

        module = importlib.import_module(f"hiresdiff.training.{module_name}")
        module.add_arguments(p).set_defaults(run=module.train)


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="the UG reproduction benchmark against held-out real emoji (writes benchmarks/results/)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="local 32² UNet2DModel folder (default: the embedded model), or with "
        "--suite latent a 32² text-to-image pipeline (emoji-latent, emoji-flux or a folder)",
    )
    p.add_argument("--data", default=None, help="data-set cache (default: the one `hiresdiff data` builds)")
    p.add_argument(
        "--num-images",
        type=int,
        default=None,
        help="images per method at 2x; m-x above 2 uses num_images*4/m^2 (default 96; --quick: 8)",
    )
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 20; --quick: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scheduler", choices=sorted(SCHEDULERS), default=None, help="sampler (default: the Settings default)"
    )
    p.add_argument("--scale", type=int, nargs="+", default=None, help="scales to run (default: 2 4)")
    p.add_argument(
        "--inception", default=None, help="FID Inception-v3 weights file (pt_inception-2015-12-05) for real FID"
    )
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument(
        "--suite",
        choices=BENCH_SUITES,
        default="ug",
        help="ug: the UG reproduction rows; methods: every preset, composition, strength sweep and "
        "ablation; latent (pipelines): UG at η 1/0.6/0.3, the cascades, RGB vs latent φ, CFG 1, the tiled "
        "VAE; on a flow transformer (emoji-flux) the position rescalings instead of the tuned cascade and "
        "tiled VAE; fast (any model): the fast recipe's design space against every preset, with FLOPs "
        "relative to direct sampling; headline (any model): the presets as a user picks them (UG, Self-Cascade, "
        "FreeScale, FreeScale+UG, fast, fast+UG) against the enlargements, num_images at every scale, with FLOPs; "
        "shift (flow models): naive, UG, Self-Cascade, FreeScale and fast+UG under each shift policy; strength (any "
        "model): Self-Cascade and FreeScale at restart strengths 0.3, 0.4, 0.5, 0.7; inversion (any model): the "
        "restart from the inversion (fresh-noise share 0, 0.2, 0.5) in fast and Self-Cascade, with FLOPs; sr (any "
        "model, needs --upscaler): the super-resolution network as the fast recipe's φ, doubling or in one jump "
        "refined in 1 or 2 steps, against SR alone, FreeScale and fast, with FLOPs; refine (any model, needs "
        "--upscaler): the SR jump refined in one step from 0.1 or 0.2, whole, in tiles, in tiles with UG, and with "
        "the model's shipped few-step LoRA, with FLOPs",
    )
    p.add_argument(
        "--upscaler",
        default=None,
        metavar="FILE",
        help="a super-resolution model file or 'shipped' (the owned models' emoji network; needs the 'sr' extra): "
        "adds an 'SR alone' row at every scale; the sr suite's φ",
    )
    p.add_argument(
        "--upsamplers",
        nargs="+",
        default=None,
        metavar="SCALE=FOLDER",
        help="trained feature upsamplers for the tuned Self-Cascade row, per cascade stage (its scale), "
        "e.g. 2=hiresdiff/models/emoji32_upsamplers_64 (4× runs: also 4=… to reuse them at the 4× stage)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 8 images, 2 steps, 2x only, one θ")
    p.set_defaults(run=run_bench)


def check_bench_options(args) -> Optional[dict]:
    """The --upsamplers as {scale: folder}; ``ValueError`` naming the option for any plain option value ``bench``
    cannot run, before torch loads."""
    check_at_least_one(args, "num_images", "steps")
    if args.suite in SR_SUITES and args.upscaler is None:
        raise ValueError(
            f"--suite {args.suite} needs --upscaler FILE (a super-resolution model, e.g. the shipped emoji_sr)"
        )
    check_part_options(args)  # --upscaler a file
    if args.scale is not None:
        check_scales(args.scale, "--scale")
    if not args.upsamplers:
        return None
    try:
        return {int(k): v for k, v in (item.split("=", 1) for item in args.upsamplers)}
    except ValueError:
        raise ValueError(f"--upsamplers takes SCALE=FOLDER items; got {args.upsamplers}") from None


def run_bench(args) -> None:
    upsamplers = check_bench_options(args)

    from hiresdiff.cli.generate import given_or_shipped
    from hiresdiff.eval.benchmark import Settings, run

    given = {
        k: v
        for k, v in (
            ("num_images", args.num_images),
            ("steps", args.steps),
            ("scheduler", args.scheduler),
            ("scales", tuple(args.scale or ()) or None),
        )
        if v is not None
    }
    command = "hiresdiff " + " ".join(getattr(args, "argv", None) or sys.argv[1:])  # the line main() was given
    common = dict(
        model=args.model,
        data=args.data,
        seed=args.seed,
        inception=args.inception,
        out_dir=args.out_dir,
        command=command,
        suite=args.suite,
        upsamplers=upsamplers,
        upscaler=given_or_shipped(args, "upscaler"),
        **given,
    )
    run(Settings.quick(**common) if args.quick else Settings(**common))
    print(f"wrote {args.out_dir}/{args.suite}_benchmark.md, .json and the {args.suite}_grid_*.png grids")


def add_ui_parser(sub) -> None:
    p = sub.add_parser("ui", help='a web page to compare methods and upscale images (needs: pip install -e ".[ui]")')
    p.add_argument(
        "--model",
        default=None,
        help="local UNet2DModel folder (default: the embedded model), "
        "emoji-latent, or a diffusers SD 1.x/2.x / SDXL pipeline folder or hub id",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-side", type=int, default=256, help="largest output side a request may ask for (default 256)")
    p.set_defaults(run=run_ui)


def check_ui_options(args) -> None:
    """``ValueError`` naming the option for a port or size ``ui`` cannot serve, before Gradio and torch load."""
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535]; got {args.port}")
    check_at_least_one(args, "max_side")


def run_ui(args) -> None:
    check_ui_options(args)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the web UI needs Gradio: pip install -e ".[ui]"') from None
    from hiresdiff.ui import Handlers, launch

    try:
        Handlers(args.model).trained_size()  # a model that cannot be read fails here, before the server starts
    except FileNotFoundError:
        raise
    except OSError as error:  # a folder without the configs the UI reads
        raise ValueError(f"--model {args.model!r}: {str(error).splitlines()[0]}") from None
    launch(args.model, host=args.host, port=args.port, max_side=args.max_side)
