"""The plan's table: predicted peak memory and FLOPs relative to direct sampling, per architecture, size and method.

    python benchmarks/plan_table.py --arch sdxl --sizes 1024 2048 4096 8192 --methods naive freescale fast ug
    python benchmarks/plan_table.py --arch flux1-dev --dtype bf16 --sizes 2048 4096 --methods naive freescale fast \
        --placements none:none model:none group:int8 group:gguf-q8 group:gguf-q4 --out …_lowvram.json
    python benchmarks/plan_table.py --arch wan2.1-14b --dtype bf16 --sizes 480x832 720x1280 1440x2560 2160x3840 \
        --frames 81 --methods naive ug freescale fast --memory 80

A size is one number (square) or HEIGHTxWIDTH; a video architecture's clips have ``--frames`` frames (default its
pipeline's). Each row is :func:`hiresdiff.cost.plan.plan` (the real architecture on ``meta``, the whole run counted,
fp16, the defaults of ``generate``: feed-forward chunks, the VAE tiled above 2048²); naive runs first at every size and
its
FLOPs are the direct sampling the others are divided by. At the trained size every cascade is plain sampling. Writes
``benchmarks/results/plan_<arch>.md`` and ``.json`` (rewritten after every row, so a stopped run keeps its rows;
a later run of the same settings replaces the rows of its sizes and keeps the others). ``--placements`` adds, per
row, the peak under each OFFLOAD:QUANT (:mod:`hiresdiff.cost.residency`: the weights resident in the largest phase
plus the same working memory, which neither changes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

GIB = 2**30


def main() -> None:
    from tqdm.auto import tqdm

    from hiresdiff.batch import write_json_atomically
    from hiresdiff.cost.architectures import build_pipeline
    from hiresdiff.cost.meta_run import as_meta_twin
    from hiresdiff.cost.plan import DTYPES, PLAN_ARCHS, plan
    from hiresdiff.cost.residency import residency
    from hiresdiff.denoisers.registry import find_denoiser

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sdxl", choices=PLAN_ARCHS)
    p.add_argument("--sizes", nargs="+", default=["1024", "2048", "4096", "8192"], help="PIXELS or HEIGHTxWIDTH")
    p.add_argument("--frames", type=int, default=None, help="a video architecture's clip length")
    p.add_argument("--methods", nargs="+", default=["naive", "freescale", "fast", "ug"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--dtype", default="fp16", choices=tuple(DTYPES))
    p.add_argument("--memory", type=float, default=24.0, help="GiB the 'fits' column is for")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--placements",
        nargs="+",
        default=[],
        metavar="OFFLOAD:QUANT",
        help="weights placements to add a peak column for, e.g. group:gguf-q8",
    )
    args = p.parse_args()
    args.sizes = [size_label(text) for text in args.sizes]
    placements = [tuple(text.split(":")) for text in args.placements]
    out = Path(args.out or f"benchmarks/results/plan_{args.arch}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/plan_table.py " + " ".join(sys.argv[1:])
    pipe = as_meta_twin(build_pipeline(args.arch, device="meta", dtype=DTYPES[args.dtype]))
    rows, commands = [], [command]
    if out.exists():  # rows of other sizes from an earlier run of the same settings are kept (and its command named)
        earlier = json.loads(out.read_text())
        settings = (("arch", args.arch), ("steps", args.steps), ("dtype", args.dtype), ("frames", args.frames))
        if all(earlier.get(k) == v for k, v in settings):
            rows = [r for r in earlier["rows"] if r["size"] not in args.sizes]
            commands = [c for c in earlier.get("commands", [earlier.get("command")]) if c != command] + [command]
    for size in tqdm(args.sizes, desc="sizes"):
        direct = None
        for method in ["naive"] + [m for m in args.methods if m != "naive"]:  # naive first: its FLOPs are direct's
            start = time.perf_counter()
            try:
                result = plan(
                    args.arch,
                    *hw(size),
                    method=method,
                    steps=args.steps,
                    dtype=args.dtype,
                    pipe=pipe,
                    direct_flops=direct,
                    num_frames=args.frames,
                )
                direct = direct or result.flops
                denoiser, element = find_denoiser(pipe)[0], DTYPES[args.dtype].itemsize
                placed = {  # the same plan with its weights placed otherwise
                    f"{offload}:{quant}": dataclasses.replace(
                        result, residency=residency(args.arch, denoiser, pipe.vae, offload, quant, element)
                    )
                    for offload, quant in placements
                }
                rows.append(
                    {
                        "size": size,
                        "method": method,
                        "relative_flops": result.relative_flops,
                        "tflops": result.flops / 1e12,
                        "weights_gib": result.weights_bytes / GIB,
                        "working_gib": result.working_bytes / GIB,
                        "peak_gib": result.peak_bytes / GIB,
                        "fits": result.fits(args.memory),
                        "stages": [[shown_stage(s.size), s.steps] for s in result.stages],
                        "seconds_to_plan": time.perf_counter() - start,
                        "placements": {
                            name: {
                                "peak_gib": one.peak_bytes / GIB,
                                "fits": one.fits(args.memory),
                                "denoising_weights_gib": one.residency.denoise / GIB,
                                "moved_per_call_gib": one.residency.moved_per_call / GIB,
                            }
                            for name, one in placed.items()
                        },
                    }
                )
            except ValueError as error:  # a method that cannot make the size (UG at non-integer scales)
                rows.append({"size": size, "method": method, "error": str(error)})
            rows.sort(key=lambda r: hw(r["size"]))
            write_json_atomically(
                {
                    "commands": commands,
                    "arch": args.arch,
                    "steps": args.steps,
                    "dtype": args.dtype,
                    "frames": args.frames,
                    "memory_gib": args.memory,
                    "rows": rows,
                },
                out,
            )
    write_markdown(json.loads(out.read_text()), out.with_suffix(".md"))


def size_label(text: str):
    """A size as given: ``"2048"`` → 2048 (square), ``"480x832"`` → ``"480x832"``."""
    return int(text) if "x" not in text else text


def hw(label) -> tuple[int, int]:
    """(height, width) of a size label."""
    return (label, label) if isinstance(label, int) else tuple(int(n) for n in label.split("x"))


def shown_stage(size) -> object:
    """A stage's size in the table: its side if square, else HEIGHTxWIDTH."""
    return size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}"


def shown(label) -> str:
    return f"{label}²" if isinstance(label, int) else label


def write_markdown(results: dict, path: Path) -> None:
    from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE

    lines = [
        f"# Predicted cost: {results['arch']}, {results['steps']} steps, {results['dtype']}"
        + (f", clips of {results['frames']} frames\n" if results.get("frames") else "\n"),
        f"Made by `{'` and `'.join(results['commands'])}` "
        "(no weights, no GPU: the architecture on `meta`, every stage, step, hook and "
        f"VAE call of `hiresdiff.generate` counted). "
        "Peak = weights (UNet or transformer, VAE, text encoders) + working memory; "
        f"fits = weights + working × {1 + ALLOCATOR_TOLERANCE:g} (allocator margin) ≤ {results['memory_gib']:g} GiB.\n",
        "| size | method | stages (side × steps) | TFLOPs | FLOPs ×direct | working GiB | peak GiB | fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {shown(r['size'])} | {r['method']} | not supported: {r['error'][:80]} | | | | | |")
            continue
        stages = " → ".join(f"{side}×{steps}" for side, steps in r["stages"])
        lines.append(
            f"| {shown(r['size'])} | {r['method']} | {stages} | {r['tflops']:.0f} | {r['relative_flops']:.2f} | "
            f"{r['working_gib']:.2f} | {r['peak_gib']:.2f} | {'yes' if r['fits'] else 'no'} |"
        )
    placements = sorted({name for r in results["rows"] for name in r.get("placements", {})}, key=str)
    if placements:
        lines += [
            "",
            "Peak GiB (fits?) with the weights placed as OFFLOAD:QUANT (`hiresdiff plan --offload … --quant …`): the "
            "largest phase's resident weights (encoding, denoising, decoding) + the working memory; in brackets the "
            "denoiser's weights resident while denoising and the GiB moved onto the device per denoiser call.",
            "",
            "| size | method | " + " | ".join(placements) + " |",
            "|---|---|" + "---|" * len(placements),
        ]
        for r in results["rows"]:
            if "placements" not in r:
                continue
            cells = []
            for name in placements:
                one = r["placements"][name]
                cells.append(
                    f"{one['peak_gib']:.1f} ({'yes' if one['fits'] else 'no'}; {one['denoising_weights_gib']:.2f}, "
                    f"{one['moved_per_call_gib']:.1f} moved)"
                )
            lines.append(f"| {shown(r['size'])} | {r['method']} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
