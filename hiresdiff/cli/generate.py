"""``hiresdiff generate`` (a labelled comparison grid of methods) and ``hiresdiff upscale IMAGE``.

Without ``--model`` both run the embedded 32² emoji model; with ``--model PATH_OR_ID`` a local
``UNet2DModel`` folder or (with ``--prompt``) any diffusers SD 1.x/2.x, SDXL or AnimateDiff pipeline.
Methods are presets or ``a+b`` compositions, comma-separated for a grid (:mod:`hiresdiff.options`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

from hiresdiff.checks import check_scales
from hiresdiff.cli.choices import (
    DTYPES,
    check_at_least_one,
    check_dtype,
    check_factor,
    check_finite,
    check_method_names,
    check_one_method,
    check_part_options,
    shift_option,
)
from hiresdiff.defaults import (
    COMPARISON_METHODS,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    MAX_PIXELS,
    PRESETS,
    check_max_pixels,
)
from hiresdiff.loading.low_memory import OFFLOAD_MODES, QUANT_MODES, check_quant
from hiresdiff.models import is_pipeline, shipped_upsamplers
from hiresdiff.sampling.schedulers import SCHEDULERS

DEFAULT_OUT = "hiresdiff-grid.png"
DEFAULT_SCALE = 2
OUT_FOLDER = "its folder must exist"


def add_max_pixels(p) -> None:
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse outputs above this many pixels before any work (default {MAX_PIXELS:,} = 2048²)",
    )


def check_run_numbers(args) -> None:
    """``ValueError`` naming the flag for a count below 1, a non-finite guidance scale (argparse takes 0 and nan), a
    part option out of its range, a --dtype that is none or a --shift that is no policy or number > 0 (before any
    heavy import)."""
    check_at_least_one(args, "steps", "num_images", "num_frames", "max_pixels")
    check_finite(getattr(args, "guidance_scale", None), "--guidance-scale")
    check_part_options(args)
    check_dtype(getattr(args, "dtype", None))
    if getattr(args, "shift", None) is not None:
        shift_option(args.shift)
    if getattr(args, "quant", None) is not None:
        check_quant(args.quant, args.gguf)  # the package it needs, the file it reads


def check_prompt(args) -> None:
    """``ValueError`` for a blank ``--prompt``, or a pipeline ``--model`` (a folder or short name) without one."""
    if args.prompt is not None and not args.prompt.strip():
        raise ValueError('--prompt is empty: a text-to-image pipeline needs a prompt, e.g. --prompt "cat face"')
    if args.prompt is None and is_pipeline(args.model):
        raise ValueError(f'--model {args.model} is a text-to-image pipeline: give --prompt, e.g. --prompt "cat face"')


def parse_factor(text: str):
    """'2' → 2, '2,1,1' → (2, 1, 1)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"factor must be an int or comma-separated ints; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_method_options(p: argparse.ArgumentParser, default_methods) -> None:
    """--method and the options of the methods' parts, shared by generate and upscale."""
    p.add_argument(
        "--method",
        nargs="+",
        default=default_methods,
        help=f"comma-separated methods: {', '.join(PRESETS)} or 'a+b' compositions "
        f"(default: {','.join(default_methods)})",
    )
    add_part_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps (default {DEFAULT_STEPS}; pipelines 30)")
    p.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULERS),
        default=None,
        help=f"sampler (default {DEFAULT_SCHEDULER} for pixel models, the pipeline's own otherwise)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_max_pixels(p)
    pipe = p.add_argument_group(
        "diffusers pipelines (SD 1.x/2.x, SDXL, AnimateDiff, FLUX.1, SD3): --model with --prompt"
    )
    pipe.add_argument("--prompt", default=None, help="run the --model pipeline on this prompt")
    add_pipeline_options(pipe)


def add_part_options(p) -> None:
    """The options of the recipes' parts (:class:`hiresdiff.options.MethodOptions`)."""
    p.add_argument("--theta", type=float, default=None, help="UG guidance scale θ (default 1.0)")
    p.add_argument(
        "--eta",
        type=float,
        default=None,
        help="UG is on for t >= (1-η)T (default: 1.0 for pixel models, every step; "
        "0.6 for latent pipelines, the paper's settings)",
    )
    p.add_argument(
        "--strength", type=float, default=None, help="cascades: fraction of the schedule re-noised (default 0.7)"
    )
    p.add_argument(
        "--alpha", type=float, default=None, help="cascades: FreeScale's detail control α (default 2 for freescale)"
    )
    p.add_argument(
        "--inversion",
        type=float,
        default=None,
        metavar="SHARE",
        help="cascades: start each later stage from the inversion of its upsampled input, with this share of fresh "
        "noise in [0, 1] (0: pure inversion; one more model call per step of the stage); default: fresh noise",
    )
    p.add_argument(
        "--upscaler",
        default=None,
        metavar="FILE",
        help="cascades: a super-resolution model file (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, …: any spandrel reads; "
        "needs the 'sr' extra) as the upsampling between stages, or 'shipped' (the owned models' emoji network); "
        "default: bicubic interpolation",
    )
    p.add_argument(
        "--tiles",
        type=float,
        default=None,
        metavar="OVERLAP",
        help="cascades: denoise the later stages in tiles of the trained size overlapping by this share in [0, 1), "
        "blended with Gaussian feathering (the denoiser's memory a tile's at any size); default: whole",
    )
    p.add_argument(
        "--stage-scheduler",
        choices=sorted(SCHEDULERS),
        default=None,
        help="cascades on UNet pipelines: the sampler of the later stages (e.g. lcm with a few-step --stage-lora); "
        "default: the run's",
    )
    p.add_argument(
        "--stage-lora",
        default=None,
        metavar="LORA",
        help="cascades on pipelines: a LoRA (folder, file or hub id; LCM-LoRA, Hyper-SD, Lightning) active in the "
        "later stages only, or 'shipped' (emoji-latent's LCM student); default: none",
    )
    p.add_argument(
        "--upsamplers",
        default=None,
        help="cascades: feature upsamplers folder for Self-Cascade "
        "(default on the embedded model: the shipped ones; 'none': tuning-free)",
    )
    p.add_argument(
        "--positions",
        choices=("pi", "ntk", "yarn"),
        default=None,
        help="flow transformers (FLUX, SD3): "
        "position rescaling above the trained size for every method (default: PI where a method dilates)",
    )


def add_pipeline_options(pipe) -> None:
    """Options passed to a diffusers pipeline's call and loading."""
    pipe.add_argument("--negative-prompt", default=None)
    pipe.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance (default: the model's recommended scale, e.g. emoji-flux's 4, else 7.5)",
    )
    pipe.add_argument(
        "--shift",
        default=None,
        help="flow models (FLUX, SD3): the σ grid's shift at every stage: trained (the trained size's), pipeline "
        "(the pipeline's own at each size; FLUX's extrapolates), resolution (SD3's √ pixel-ratio rule) or a number "
        "(a fixed shift); default trained",
    )
    pipe.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: pipelines the best available, pixel models the CPU)"
    )
    pipe.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="pipelines: CPU offload by diffusers (model: one model on the device at a time; sequential: each layer; "
        "group: one block at a time, prefetched); without an accelerator it warns and runs as without",
    )
    pipe.add_argument(
        "--quant",
        choices=QUANT_MODES,
        default="none",
        help="pipelines: the denoiser's weights quantized (int8, fp8: torchao weight-only; nf4: bitsandbytes; "
        "gguf-q8, gguf-q4: read from --gguf)",
    )
    pipe.add_argument(
        "--gguf", default=None, metavar="FILE", help="a GGUF single file of the denoiser (--quant gguf-…)"
    )
    pipe.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="default: pipelines fp16 on cuda and fp32 elsewhere, pixel models fp32",
    )


#: The options that take ``shipped``: the :mod:`hiresdiff.models` lookup naming what a model ships, and what it is.
SHIPPED = {
    "upscaler": ("shipped_upscaler", "upscaler; give a super-resolution model file"),
    "stage_lora": ("shipped_stage_lora", "few-step LoRA; give a LoRA folder, file or id"),
}


def given_or_shipped(args, option: str):
    """``--upscaler``'s or ``--stage-lora``'s value (``option``): as given, or for ``shipped`` what the model ships
    (``ValueError`` if it ships none)."""
    value = getattr(args, option)
    if value != "shipped":
        return value
    import hiresdiff.models

    lookup, what = SHIPPED[option]
    found = getattr(hiresdiff.models, lookup)(getattr(args, "model", None))
    if found is None:
        raise ValueError(f"--{option.replace('_', '-')} shipped: {args.model} ships no {what}")
    return found


def method_options(args):
    """The part options of ``args`` as :class:`hiresdiff.options.MethodOptions`."""
    from hiresdiff.options import MethodOptions

    return MethodOptions(
        theta=args.theta,
        eta=args.eta,
        strength=args.strength,
        alpha=args.alpha,
        inversion=args.inversion,
        upscaler=given_or_shipped(args, "upscaler"),
        tiles=args.tiles,
        stage_scheduler=args.stage_scheduler,
        stage_lora=given_or_shipped(args, "stage_lora"),
        upsamplers=args.upsamplers,
        positions=args.positions,
    )


def add_generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate", help="sample above the trained resolution with several methods; write one labelled grid"
    )
    p.add_argument(
        "--model",
        default=None,
        help="local UNet2DModel folder (default: the embedded 32² emoji model), "
        "emoji-latent or emoji-flux (the owned 32² text-to-image pipelines, with --prompt), "
        "or with --prompt a diffusers pipeline folder or hub id",
    )
    add_method_options(p, list(COMPARISON_METHODS))
    p.add_argument(
        "--scale",
        type=float,
        nargs="+",
        default=[DEFAULT_SCALE],
        help=f"target sizes as multiples of the trained size (default {DEFAULT_SCALE})",
    )
    p.add_argument(
        "--height", type=int, default=None, help="target height in pixels (with --width; instead of --scale)"
    )
    p.add_argument("--width", type=int, default=None, help="target width in pixels")
    p.add_argument(
        "--num-images", type=int, default=None, help="rows of the grid (default: 3 on pixel models, 1 on pipelines)"
    )
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"grid to write, PNG, JPEG or WebP by its suffix (default {DEFAULT_OUT}); {OUT_FOLDER}; videos: the "
        "methods side by side as an animation by its suffix (.gif, .webp, .mp4 with the video extra) or, with "
        ".png/.jpg, the first frames' grid and OUT.gif",
    )
    video = p.add_argument_group("video pipelines (AnimateDiff, Wan)")
    video.add_argument("--num-frames", type=int, default=None, help="frames to generate")
    video.add_argument(
        "--factor",
        type=parse_factor,
        default=None,
        help="UG frame factor as F,1,1 (more frames than trained); spatial factors follow from the size",
    )
    video.add_argument("--fps", type=float, default=8, help="frames per second of the animation")
    p.set_defaults(run=run_generate)


def check_size_args(args) -> None:
    if (args.height is None) != (args.width is None):
        raise ValueError("--height and --width go together")
    if args.height is not None:
        check_at_least_one(args, "height", "width")
        check_max_pixels(args.height, args.width, args.max_pixels)
    if args.prompt is not None and args.model is None:
        raise ValueError("--prompt needs --model (a diffusers pipeline folder or hub id)")
    check_prompt(args)
    if args.prompt is None and (args.num_frames is not None or args.factor is not None):
        raise ValueError("--num-frames and --factor need a video pipeline: --model with --prompt")


def video_outputs(args, out: Path) -> tuple[Optional[Path], Optional[Path]]:
    """Where a run's outputs go: (grid image, animation); an image run writes only the grid, a video run (--num-frames)
    the animation at --out when its suffix is a video format's, else the first frames' grid there and OUT.gif."""
    from hiresdiff.grid import VIDEO_FORMATS

    if args.num_frames is None:
        return out, None
    if out.suffix.lower() in VIDEO_FORMATS:
        return None, out
    return out, out.with_suffix(".gif")


def check_outputs(args, *images: Optional[Path], animation: Optional[Path] = None) -> None:
    """Before any heavy work: each of ``images`` (--out and the files named after it) has an image suffix and the
    ``animation`` a video format's (whose writer is installed), each in an existing writable folder (none is created)
    with no file in the way unless --force."""
    from hiresdiff.grid import IMAGE_FORMATS, VIDEO_FORMATS, check_video_writer, check_writable

    paths = [(path, IMAGE_FORMATS) for path in images] + [(animation, VIDEO_FORMATS)]
    for path, formats in paths:
        if path is not None:
            check_writable(path, args.force, formats, create_folder=False, option="--out")
    if animation is not None:
        check_video_writer(animation)


def check_generate_options(args) -> list[str]:
    """The methods' names; ``ValueError`` naming the option for any plain option value ``generate`` cannot run, before
    torch loads."""
    methods = check_method_names(args.method)
    check_run_numbers(args)
    check_scales(args.scale, "--scale")
    check_size_args(args)
    check_factor(args.factor)
    check_finite(args.fps, "--fps")
    if args.fps <= 0:
        raise ValueError(f"--fps must be a number > 0; got {args.fps}")
    return methods


def run_generate(args) -> None:
    check_generate_options(args)
    grid, animation = video_outputs(args, Path(args.out))
    check_outputs(args, grid, animation=animation)

    from hiresdiff.grid import labelled_grid, save_image, save_video
    from hiresdiff.options import parse_methods

    methods = parse_methods(args.method)  # now also whether each composition's presets fit together
    options = method_options(args)
    if args.prompt is not None:
        columns, labels = pipeline_columns(args, methods, options)
    else:
        from hiresdiff.comparison import comparison

        size = (args.height, args.width) if args.height is not None else None
        check_pixel_sizes(args, methods, options, size)
        device, dtype = pixel_device_and_dtype(args)
        columns, labels = comparison(
            args.model,
            scales=args.scale,
            size=size,
            methods=methods,
            options=options,
            max_pixels=args.max_pixels,
            device=device,
            dtype=dtype,
            seed=args.seed,
            num_images=3 if args.num_images is None else args.num_images,
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            scheduler=args.scheduler or DEFAULT_SCHEDULER,
        )
    cell = max(96, min(512, max(image.width for image in columns[-1])))
    if grid is not None:
        save_image(labelled_grid(columns, labels, cell), grid, force=args.force)
    if animation is not None:  # frame k: the methods side by side
        frames = [labelled_grid([[column[k]] for column in columns], labels, cell) for k in range(len(columns[0]))]
        save_video(frames, animation, force=args.force, fps=args.fps)
    written = ", ".join(str(p) for p in filter(None, (grid, animation)))
    print(f"wrote {written}  (columns: {', '.join(labels)}; seed {args.seed})")


def check_pixel_sizes(args, methods, options, size) -> None:
    """Before a pixel model's weights load: from its config alone, every output size is under --max-pixels and every
    method can make it."""
    from hiresdiff.comparison import check_recipes_make, scaled_size
    from hiresdiff.denoisers.registry import size_multiple, trained_size
    from hiresdiff.loading.pixel_model import pixel_model_config
    from hiresdiff.models import EMBEDDED_MODEL_DIR
    from hiresdiff.options import recipes_for

    recipes = recipes_for(methods, options, shipped_upsamplers(args.model))
    _, config = pixel_model_config(args.model or EMBEDDED_MODEL_DIR)
    trained = trained_size(config)
    sizes = [size] if size is not None else [scaled_size(trained, scale) for scale in args.scale]
    for height, width in sizes:
        check_max_pixels(height, width, args.max_pixels)
    check_recipes_make(recipes, trained, sizes, size_multiple(config))


def pipeline_columns(args, methods, options):
    """Load the --model pipeline once and run every method on the prompt."""
    from hiresdiff.comparison import pipeline_comparison
    from hiresdiff.options import recipes_for

    recipes = recipes_for(methods, options, shipped_upsamplers(args.model))
    if args.factor is not None:  # a frame factor for video pipelines: temporal UG
        recipes = {
            m: r if r.ug is None else dataclasses.replace(r, ug=dataclasses.replace(r.ug, factor=args.factor))
            for m, r in recipes.items()
        }
    pipe, kwargs = load_cli_pipeline(args, needs_unet=any(r.describe() != "naive" for r in recipes.values()))
    from hiresdiff.comparison import check_recipes_make, scaled_size
    from hiresdiff.denoisers.registry import find_denoiser, size_multiple, trained_size, vae_factor

    factor = vae_factor(pipe)
    denoiser = find_denoiser(pipe)[0]
    trained = trained_size(denoiser, pipe)
    sizes = (
        [(args.height, args.width)]
        if args.height is not None  # --scale: multiples of the trained size in pixels
        else [scaled_size(tuple(n * factor for n in trained), scale) for scale in args.scale]
    )
    for height, width in sizes:
        check_max_pixels(height, width, args.max_pixels)
    if all(h % factor == 0 and w % factor == 0 for h, w in sizes):  # every method can make the sizes, before sampling
        check_recipes_make(recipes, trained, [(h // factor, w // factor) for h, w in sizes], size_multiple(denoiser))
    if args.num_images is not None:
        kwargs["num_images_per_prompt"] = args.num_images
    warn_if_too_large(pipe, args, recipes, sizes, kwargs)
    return pipeline_comparison(
        pipe,
        args.prompt,
        sizes=sizes,
        recipes=recipes,
        seed=args.seed,
        steps=30 if args.steps is None else args.steps,
        num_frames=args.num_frames,
        **kwargs,
    )


def warn_if_too_large(pipe, args, recipes: dict, sizes, kwargs: dict) -> None:
    """On a CUDA device, say on stderr which runs will likely not fit its free memory (predicted on a meta twin)."""
    from hiresdiff.cost.plan import memory_warning

    for height, width in sizes:
        for method, recipe in recipes.items():
            message = memory_warning(
                pipe, recipe, height, width, prompt=args.prompt, num_frames=args.num_frames, **kwargs
            )
            if message:
                print(f"hiresdiff: warning: {method} at {height}x{width}: {message}", file=sys.stderr)


def pixel_device_and_dtype(args):
    """(device, dtype) of a pixel model from --device and --dtype (default: the CPU in fp32), the device checked."""
    import torch

    from hiresdiff.loading.pipelines import check_device

    device = check_device(args.device) if args.device else "cpu"
    return device, getattr(torch, DTYPES[args.dtype]) if args.dtype else None


def load_cli_pipeline(args, needs_unet: bool, device=None, progress: bool = True):
    """The --model pipeline on --device (else ``device``, else the best) in --dtype with --scheduler, and its
    call's keyword arguments."""
    import torch

    from hiresdiff.loading.pipelines import load_pipeline
    from hiresdiff.sampling.schedulers import make_scheduler

    if args.model is None:
        raise ValueError("--prompt needs --model (a diffusers pipeline folder or hub id)")
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    pipe, settings = load_pipeline(
        args.model,
        device=args.device or device,
        dtype=dtype,
        needs_unet=needs_unet,
        progress=progress,
        offload=args.offload,
        quant=args.quant,
        gguf=args.gguf,
    )
    if args.scheduler is not None:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config)
    kwargs = settings.arguments(pipe, args.guidance_scale, args.negative_prompt)
    if getattr(args, "shift", None) is not None:
        kwargs["shift"] = shift_option(args.shift)
    return pipe, kwargs


def add_upscale_parser(sub) -> None:
    p = sub.add_parser("upscale", help="upscale an existing image: it is the first stage of a cascade")
    p.add_argument("image", help="the image file (for the embedded model: 32x32, e.g. an emoji)")
    p.add_argument(
        "--model",
        default=None,
        help="local UNet2DModel folder (default: the embedded model) or, "
        "with --prompt, emoji-latent or a diffusers SD 1.x/2.x or SDXL pipeline folder or hub id",
    )
    add_method_options(p, ["self-cascade"])
    p.add_argument("--scale", type=float, default=2, help="output size / image size (default 2)")
    p.add_argument(
        "--class",
        dest="class_label",
        type=int,
        default=None,
        help="class-conditional models: the image's class (default: the class the model finds most likely)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="image to write, PNG, JPEG or WebP by its suffix (default: "
        f"IMAGE-x<scale>.png in the current folder); {OUT_FOLDER}",
    )
    p.add_argument(
        "--compare", action="store_true", help="also write OUT-compare.png: the image enlarged beside the result"
    )
    p.set_defaults(run=run_upscale)


def check_upscale_options(args) -> str:
    """The method; ``ValueError`` naming the option for any plain option value ``upscale`` cannot run, the image
    file (it exists, its header is an image's) and the output's size against --max-pixels, before torch loads."""
    from PIL import Image

    method = check_one_method(args.method, "upscale")
    check_run_numbers(args)
    check_scales(args.scale, "--scale")
    if args.class_label is not None and args.class_label < 0:
        raise ValueError(f"--class must be a class label >= 0; got {args.class_label}")
    check_prompt(args)
    source = Path(args.image)
    if not source.is_file():
        raise FileNotFoundError(f"image {str(source)!r} does not exist")
    try:
        with Image.open(source) as opened:
            width, height = opened.size
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {str(source)!r} cannot be read as an image: {str(error).splitlines()[0]}") from None
    check_max_pixels(round(height * args.scale), round(width * args.scale), args.max_pixels)
    return method


def class_line(label: int, classes: int, chosen: bool) -> str:
    """What ``upscale`` says of the class it conditions on. The embedded model ships no names for its classes (its
    README lists them in prose), so a label is printed as a number, said to be one."""
    how = "" if chosen else ": the most likely for the image (--class sets it)"
    return f"class label {label} of 0-{classes - 1} (this model ships no class names){how}"


def run_upscale(args) -> None:
    check_upscale_options(args)
    source = Path(args.image)
    out = Path(args.out or f"{source.stem}-x{args.scale:g}.png")
    compare = out.with_name(f"{out.stem}-compare{out.suffix}") if args.compare else None
    check_outputs(args, out, compare)

    import torch
    from PIL import Image

    from hiresdiff.grid import labelled_grid, save_image
    from hiresdiff.image_upscale import image_tensor, target_size, upscale
    from hiresdiff.loading.pixel_model import to_pil
    from hiresdiff.options import parse_methods, recipes_for

    methods = parse_methods(args.method)  # now also whether the composition's presets fit together
    try:
        with Image.open(source) as opened:
            pixels = image_tensor(opened)  # transparency on white, 16-bit and palette images with their range
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {str(source)!r} cannot be read as an image: {str(error).splitlines()[0]}") from None
    image = to_pil(pixels)[0]
    check_max_pixels(*target_size(image.height, image.width, args.scale), args.max_pixels)  # exactly, whole pixels
    recipe = recipes_for(methods, method_options(args), shipped_upsamplers(args.model))[methods[0]]
    if args.prompt is None:
        from hiresdiff.denoisers.registry import size_multiple, trained_size
        from hiresdiff.image_upscale import check_upscalable, likely_class_labels
        from hiresdiff.loading.pixel_model import load_pixel_model, pixel_model_config
        from hiresdiff.models import EMBEDDED_MODEL_DIR

        _, config = pixel_model_config(args.model or EMBEDDED_MODEL_DIR)  # sizes checked before the model loads
        check_upscalable(
            trained_size(config),
            size_multiple(config),
            recipe,
            pixels.shape[-2:],
            target_size(image.height, image.width, args.scale),
        )
        classes = config.get("num_class_embeds")
        if args.class_label is not None and not 0 <= args.class_label < (classes or 0):
            raise ValueError(f"--class must be in [0, {classes or 0}) for this model; got {args.class_label}")
        device, dtype = pixel_device_and_dtype(args)
        unet, scheduler = load_pixel_model(
            args.model or EMBEDDED_MODEL_DIR, args.scheduler or DEFAULT_SCHEDULER, device, dtype or torch.float32
        )
        labels = None
        if classes is not None:
            labels = (
                torch.tensor([args.class_label])
                if args.class_label is not None
                else likely_class_labels(unet, scheduler, pixels, args.seed)
            )
            print(class_line(labels.item(), classes, chosen=args.class_label is not None))
        result = upscale(
            unet,
            pixels,
            scale=args.scale,
            recipe=recipe,
            scheduler=scheduler,
            steps=DEFAULT_STEPS if args.steps is None else args.steps,
            seed=args.seed,
            class_labels=labels,
        )[0]
    else:
        pipe, kwargs = load_cli_pipeline(args, needs_unet=True)
        result = upscale(
            pipe,
            image,
            scale=args.scale,
            recipe=recipe,
            prompt=args.prompt,
            steps=30 if args.steps is None else args.steps,
            seed=args.seed,
            **kwargs,
        )[0]
    save_image(result, out, force=args.force)
    if compare is not None:
        labels = [f"input {image.width}x{image.height}", f"{methods[0]} {result.width}x{result.height}"]
        side = max(96, min(512, result.width))
        save_image(labelled_grid([[image], [result]], labels, side), compare, force=args.force)
    print(f"wrote {out}" + (f" and {compare}" if compare else ""))
