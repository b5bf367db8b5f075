"""Time and working memory of every method on the real SD 1.5 / SDXL / AnimateDiff architectures (random weights).

    python benchmarks/cost.py --arch sd15 --sizes 512 768 1024 --steps 4 --json benchmarks/results/cost_sd15_cpu.json

For each recipe (naive at the target size, UG, Self-Cascade, FreeScale, FreeScale+UG) at each target
size, one fresh process builds the pipeline (:func:`hiresdiff.cost.architectures.build_pipeline`, random weights:
cost only, docs/architecture.md, "Counting cost without weights") and runs :func:`hiresdiff.generate` once, VAE decode
included. It reports:

* ``seconds``: wall time of the generate call (the build excluded);
* ``working_bytes``: peak memory of the call minus the memory held once the pipeline is loaded. CPU:
  the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after loading)
  minus its resident set then; CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes after
  loading.

The cases run interleaved (every recipe of a size, then the next size; ``--repeats`` rounds), and the
median over repeats is divided by naive's at the same size. ``--pipeline-dir`` measures a saved diffusers
pipeline folder instead of an architecture (the test suite uses a tiny one). Writes JSON rows
(``arch, recipe, height, width, steps, seconds, ratio_to_naive, working_bytes, device``), a Markdown
table and a plot of working memory against output pixels next to ``--json``. The JSON is rewritten
(atomically) after every case, with ``"finished": false`` until the last one, so a stopped run keeps
what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = ("naive", "ug", "self-cascade", "freescale", "freescale+ug")


def load(args):
    """The pipeline to measure: an architecture with random weights, or a saved folder."""
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.pipeline_dir:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(args.pipeline_dir, torch_dtype=dtype).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    from hiresdiff.cost.architectures import build_pipeline

    return build_pipeline(args.arch, device=args.device, dtype=dtype)


def measure_case(args) -> dict:
    """One (recipe, size) in this process: build, reset the peak, generate once."""
    import gc

    import torch

    import hiresdiff
    from hiresdiff.cost.architectures import PROMPT
    from hiresdiff.cost.measured import memory_now, peak, reset_peak
    from hiresdiff.recipe import Recipe

    torch.set_num_threads(args.threads)
    pipe = load(args)
    frames = {"num_frames": args.num_frames} if "motion_adapter" in pipe.components else {}
    gc.collect()
    reset_peak(args.device)
    loaded = memory_now(args.device)
    start = time.perf_counter()
    try:
        hiresdiff.generate(
            pipe,
            PROMPT,
            height=args.size,
            width=args.size,
            recipe=Recipe.preset(args.recipe),
            steps=args.steps,
            seed=0,
            output_type="np",
            **frames,
        )
    except ValueError as error:  # refused before any UNet call: the recipe cannot make this size
        return {"error": str(error)}
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "working_bytes": peak(args.device) - loaded, "loaded_bytes": loaded}


def run_case(args, recipe: str, size: int) -> dict:
    """``measure_case`` in a fresh process (so peaks and allocator caches never carry over)."""
    command = [
        sys.executable,
        __file__,
        "--case",
        "--recipe",
        recipe,
        "--size",
        str(size),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--threads",
        str(args.threads),
        "--num-frames",
        str(args.num_frames),
        "--arch",
        args.arch,
    ]
    if args.pipeline_dir:
        command += ["--pipeline-dir", args.pipeline_dir]
    from hiresdiff.cost.measured import CPU_MEASUREMENT_ENV

    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **CPU_MEASUREMENT_ENV})
    if done.returncode != 0:
        raise RuntimeError(f"case {recipe} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sd15", choices=("sd15", "sdxl", "animatediff"))
    p.add_argument("--pipeline-dir", default=None, help="measure this saved pipeline folder instead of --arch")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square target sizes in pixels")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="default fp32 on CPU, fp16 on CUDA")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-frames", type=int, default=16, help="AnimateDiff frames")
    p.add_argument("--json", default=None, help="rows to write (default benchmarks/results/cost_<arch>_<device>.json)")
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.case:
        print(json.dumps(measure_case(args)))
        return
    if "naive" not in args.recipes:
        raise SystemExit("--recipes must include naive (the ratios are to it)")
    from tqdm.auto import tqdm

    from hiresdiff.batch import write_json_atomically

    cases = [(size, recipe) for size in args.sizes for recipe in args.recipes]
    runs = {case: [] for case in cases}
    name = Path(args.pipeline_dir).name if args.pipeline_dir else args.arch
    out = Path(args.json or f"benchmarks/results/cost_{name}_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cost.py " + " ".join(sys.argv[1:])
    for round_ in tqdm(range(args.repeats), desc="rounds", disable=args.repeats == 1):
        for size, recipe in tqdm(cases, desc="cases"):
            runs[(size, recipe)].append(run_case(args, recipe, size))
            finished = round_ == args.repeats - 1 and (size, recipe) == cases[-1]
            # after every case, so a long run that is stopped keeps what it measured
            write_json_atomically(
                {
                    "command": command,
                    "finished": finished,
                    "memory_measurement": "mmap-threshold",
                    "rows": summarize(runs, args, name),
                },
                out,
            )
    write_report(summarize(runs, args, name), command, out)


def summarize(runs: dict, args, name: str) -> list:
    """One row per measured (size, recipe): medians over its runs; ``ratio_to_naive`` is ``None`` until naive
    at that size has run."""
    rows = []
    for (size, recipe), measured in runs.items():
        if not measured:
            continue
        done = [r for r in measured if "error" not in r]
        naive = [r["seconds"] for r in runs[(size, "naive")] if "error" not in r]
        row = {
            "arch": name,
            "recipe": recipe,
            "height": size,
            "width": size,
            "steps": args.steps,
            "device": args.device,
            "dtype": args.dtype,
        }
        if not done:
            row["error"] = measured[0]["error"]
        else:
            seconds = statistics.median(r["seconds"] for r in done)
            row.update(
                seconds=round(seconds, 2),
                ratio_to_naive=round(seconds / statistics.median(naive), 3) if naive else None,
                working_bytes=int(statistics.median(r["working_bytes"] for r in done)),
                loaded_bytes=int(statistics.median(r["loaded_bytes"] for r in done)),
                repeats=len(done),
            )
        rows.append(row)
    return rows


def write_report(rows: list, command: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# Cost of every method: {rows[0]['arch']} on {rows[0]['device']} ({rows[0]['dtype']})\n",
        f"Made by `{command}`. Random weights (cost only); {rows[0]['steps']} steps at the target (cascades: "
        "the same steps at the trained size, then each later stage's restart: int(0.7·steps) for Self-Cascade and "
        "FreeScale, 3 steps for the fast recipe whatever the call's steps); VAE decode "
        "included. Working memory: peak during the call minus memory held once the pipeline was loaded.\n",
        "| size | recipe | s/image | ×naive | working memory (GiB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['height']}² | {r['recipe']} | — | — | not supported: {r['error']} |")
        else:
            ratio = "—" if r["ratio_to_naive"] is None else f"{r['ratio_to_naive']:.2f}"  # naive failed at that size
            lines.append(
                f"| {r['height']}² | {r['recipe']} | {r['seconds']:.1f} | {ratio} | {r['working_bytes'] / 2**30:.2f} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        pts = [
            (r["height"] * r["width"] / 1e6, r["working_bytes"] / 2**30)
            for r in rows
            if r["recipe"] == recipe and "error" not in r
        ]
        if pts:
            ax.plot(*zip(*pts), "o-", label=recipe)
    ax.set_xlabel("output megapixels")
    ax.set_ylabel("working memory (GiB)")
    ax.set_title(f"{rows[0]['arch']}, {rows[0]['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
