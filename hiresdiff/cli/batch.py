"""``hiresdiff batch PROMPTS.txt --model … --method freescale --out-dir DIR``: one recipe over many prompts.

Resumable and split across processes by accelerate (:mod:`hiresdiff.batch`):
``accelerate launch --num_processes N -m hiresdiff batch …``.
"""

from __future__ import annotations

import dataclasses

from hiresdiff.cli.choices import check_at_least_one, check_one_method
from hiresdiff.cli.generate import (
    add_max_pixels,
    add_part_options,
    add_pipeline_options,
    check_run_numbers,
    load_cli_pipeline,
    method_options,
)
from hiresdiff.defaults import check_max_pixels
from hiresdiff.sampling.schedulers import SCHEDULERS


def add_batch_parser(sub) -> None:
    p = sub.add_parser(
        "batch", help="generate every prompt of a file with one method (resumable; accelerate launch splits it)"
    )
    p.add_argument("prompts", help="text file, one prompt per line (# starts a comment)")
    p.add_argument(
        "--model", required=True, help="diffusers pipeline folder or hub id (SD 1.x/2.x, SDXL), or emoji-latent"
    )
    p.add_argument("--method", "--recipe", dest="method", default="freescale", help="one preset or 'a+b' composition")
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--steps", type=int, default=30)
    add_max_pixels(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one output per prompt and seed (default 0)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="default: the pipeline's own")
    p.add_argument("--out-dir", required=True)
    add_part_options(p)
    add_pipeline_options(p)
    p.set_defaults(run=run_batch_command)


def check_batch_options(args) -> None:
    """``ValueError`` naming the option for any plain option value ``batch`` cannot run, before torch loads."""
    check_one_method([args.method], "batch")
    check_run_numbers(args)
    check_at_least_one(args, "height", "width")
    check_max_pixels(args.height, args.width, args.max_pixels)


def run_batch_command(args) -> None:
    check_batch_options(args)

    from hiresdiff.batch import BatchSettings, jobs_for, read_prompts, run_batch
    from hiresdiff.models import model_settings
    from hiresdiff.options import parse_methods, recipes_for

    methods = parse_methods([args.method])  # now also whether the composition's presets fit together
    options = method_options(args)
    recipe = recipes_for(methods, options)[methods[0]]
    jobs = jobs_for(read_prompts(args.prompts), args.seeds)
    guidance_scale = model_settings(args.model).guidance_scale(args.guidance_scale)
    settings = BatchSettings(
        model=args.model,
        method=methods[0],
        height=args.height,
        width=args.width,
        steps=args.steps,
        scheduler=args.scheduler,
        guidance_scale=guidance_scale,
        negative_prompt=args.negative_prompt,
        **dataclasses.asdict(options),
    )

    def pipe_loader(device):
        return load_cli_pipeline(args, needs_unet=True, device=device, progress=False)

    written = run_batch(settings, jobs, args.out_dir, recipe=recipe, pipe_loader=pipe_loader)
    print(
        f"wrote {len(written)} of {len(jobs)} outputs to {args.out_dir} "
        "(the others were done already or by other processes)"
    )
