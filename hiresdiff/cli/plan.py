"""``hiresdiff plan``: predicted peak memory and FLOPs of a recipe on a real architecture, before any run.

hiresdiff plan --arch sdxl --size 8192 --method freescale --memory 24
"""

from __future__ import annotations

import math

from hiresdiff.cli.choices import (
    DTYPES,
    PLAN_ARCHS,
    check_at_least_one,
    check_dtype,
    check_one_method,
    check_part_options,
    check_plan_arch,
)
from hiresdiff.defaults import PRESETS
from hiresdiff.loading.low_memory import OFFLOAD_MODES, QUANT_MODES

#: pixels a size must divide by: the SD 1.5 / SDXL UNets take latents divisible by 8 (VAE factor 8: pixels by 64);
#: FLUX's packing and Wan's patches take latents divisible by 2 (pixels by 16: Wan's 480×832, 720×1280)
SIZE_MULTIPLES = {"sd15": 64, "sdxl": 64, "flux1-dev": 16, "wan2.1-1.3b": 16, "wan2.1-14b": 16}
LARGEST = 16384


def add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="predict peak memory and FLOPs of a method on a real architecture (no weights, no GPU)"
    )
    p.add_argument(
        "--arch",
        required=True,
        help=f"{', '.join(PLAN_ARCHS)} (the published UNet or transformer and VAE; random weights on meta)",
    )
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        required=True,
        metavar="PIXELS",
        help="output size: one number (square) or HEIGHT WIDTH; multiples of 64 (SD 1.5, SDXL) or 16 (FLUX, Wan)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="a video architecture's clip length, 4k + 1 (default: the pipeline's, Wan's 81); images take none",
    )
    p.add_argument(
        "--method", default="freescale", help=f"one of {', '.join(PRESETS)} or a '+'-composition (default freescale)"
    )
    p.add_argument("--steps", type=int, default=30, help="sampling steps (default 30, as generate)")
    p.add_argument("--dtype", default="fp16", help=f"{', '.join(DTYPES)} (default fp16)")
    p.add_argument("--memory", type=float, default=None, metavar="GIB", help="device memory: say whether the run fits")
    p.add_argument(
        "--vae-tiling",
        choices=("auto", "on", "off"),
        default="auto",
        help="tiled VAE: auto (as generate: outputs and the cascade's φ tile above 1536²), on, off",
    )
    p.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="CPU offload as generate's --offload: the weights resident per phase and the bytes moved (default none)",
    )
    p.add_argument(
        "--quant",
        choices=QUANT_MODES,
        default="none",
        help="the denoiser's weights quantized as generate's --quant (gguf-q8: Q8_0, gguf-q4: Q4_0; default none)",
    )
    p.add_argument(
        "--tiles",
        type=float,
        default=None,
        metavar="OVERLAP",
        help="cascades: the later stages denoised in tiles of the trained size with this overlap share, as generate's",
    )
    p.set_defaults(run=run_plan)


def check_plan_arguments(args) -> tuple[int, int]:
    """(height, width); ``ValueError`` naming the option for any plain option value the plan cannot run, before
    torch loads (whether a composition's presets fit together is asked when the recipe is made)."""
    check_plan_arch(args.arch)
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes one number or HEIGHT WIDTH; got {len(args.size)} numbers")
    height, width = args.size[0], args.size[-1]
    multiple = SIZE_MULTIPLES[args.arch]
    for n in (height, width):
        if n < multiple or n > LARGEST or n % multiple:
            raise ValueError(
                f"--size must be multiples of {multiple} from {multiple} to {LARGEST} for {args.arch}; got {n}"
            )
    video = args.arch.startswith("wan")
    if args.frames is not None and (not video or args.frames < 1 or (args.frames - 1) % 4):
        allowed = "4k + 1 (1, 5, …, 81)" if video else "none: it makes images"
        raise ValueError(f"--frames for {args.arch} takes {allowed}; got {args.frames}")
    check_dtype(args.dtype)
    check_at_least_one(args, "steps")
    if args.memory is not None and not (math.isfinite(args.memory) and args.memory > 0):
        raise ValueError(f"--memory must be a positive number (GiB); got {args.memory}")
    check_one_method([args.method], "plan")
    check_part_options(args)
    return height, width


def run_plan(args) -> None:
    height, width = check_plan_arguments(args)

    from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE
    from hiresdiff.cost.plan import GIB, plan
    from hiresdiff.options import MethodOptions, recipes_for

    recipe = recipes_for([args.method], MethodOptions(tiles=args.tiles))[args.method]
    tiling = {"auto": None, "on": True, "off": False}[args.vae_tiling]
    result = plan(
        args.arch,
        height,
        width,
        method=recipe,
        steps=args.steps,
        dtype=args.dtype,
        vae_tiling=tiling,
        progress=True,
        offload=args.offload,
        quant=args.quant,
        num_frames=args.frames,
    )
    tiles = "" if args.tiles is None else f" in tiles ({args.tiles:g} overlap)"
    frames = "" if result.num_frames is None else f", {result.num_frames} frames"
    print(
        f"{args.arch} {height}x{width}{frames} {result.method}{tiles}, "
        f"{args.steps} steps, {args.dtype}, offload {args.offload}, "
        f"quant {args.quant}: weights {result.weights_bytes / GIB:.2f} GiB"
    )
    print("| stage | size | steps | TFLOPs | working memory (GiB) |\n|---|---|---|---|---|")
    for stage in result.stages:
        print(
            f"| {stage.index} | {stage.size[0]}x{stage.size[1]} | {stage.steps} | {stage.flops / 1e12:.1f} | "
            f"{stage.peak_bytes / GIB:.2f} |"
        )
    print(f"FLOPs: {result.flops / 1e12:.1f} T = {result.relative_flops:.2f}x direct sampling at {height}x{width}")
    placed = result.residency
    print(
        f"weights resident: {placed.encode / GIB:.2f} GiB encoding the prompt, {placed.denoise / GIB:.2f} GiB "
        f"denoising, {placed.decode / GIB:.2f} GiB decoding; moved onto the device: "
        f"{placed.moved_per_call / GIB:.2f} GiB per denoiser call, {placed.moved_per_stage / GIB:.2f} GiB per stage"
    )
    print(f"predicted peak: {result.peak_bytes / GIB:.2f} GiB (the largest phase's weights + working memory)")
    if args.memory is not None:
        verdict = "fits" if result.fits(args.memory) else "does NOT fit"
        margin = f"{100 * ALLOCATOR_TOLERANCE:.0f}%"
        print(f"{verdict} in {args.memory:g} GiB (with a {margin} allocator margin on the working memory)")
