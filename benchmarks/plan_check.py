"""The plan's predictions against measured runs of the real architecture on this machine.

    python benchmarks/plan_check.py benchmarks/results/cost_sd15_cpu.json benchmarks/results/cost_sd15_cpu_small.json

For every measured row of ``benchmarks/cost.py`` JSON files (real SD 1.5 with random weights, fp32 on the CPU,
one fresh process per case), :func:`hiresdiff.cost.plan.plan` predicts the same run (same architecture, size,
recipe, steps, dtype) on ``meta``: its FLOPs relative to direct sampling against the measured time relative to
naive, and its working memory against the measured one (rows measured with glibc's mmap threshold fixed, see
:mod:`hiresdiff.cost.measured`; older rows without it are compared for time only). Writes
``benchmarks/results/plan_check.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GIB = 2**30


def main() -> None:
    from hiresdiff.cost.architectures import build_pipeline
    from hiresdiff.cost.counting import ALLOCATOR_TOLERANCE
    from hiresdiff.cost.meta_run import as_meta_twin
    from hiresdiff.cost.plan import DTYPES, plan

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("measured", nargs="+", help="JSON files written by benchmarks/cost.py")
    p.add_argument("--out", default="benchmarks/results/plan_check.md")
    args = p.parse_args()
    lines = [
        "# The plan against measured runs (real SD 1.5, random weights, CPU)\n",
        f"Made by `python benchmarks/plan_check.py {' '.join(args.measured)}`. FLOPs ×direct: the plan's "
        "FLOPs over direct sampling's; time ×naive: the measured ratio. Working memory: predicted (live tensors) "
        f"and measured (peak resident set minus the loaded pipeline); the stated tolerance is "
        f"±{100 * ALLOCATOR_TOLERANCE:.0f} %.\n",
        "| source | size | recipe | steps | FLOPs ×direct | time ×naive | "
        "working GiB predicted | measured | measured ÷ predicted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pipes = {}
    for source in args.measured:
        data = json.loads(Path(source).read_text())
        memory_valid = data.get("memory_measurement") == "mmap-threshold"
        for row in data["rows"]:
            if "error" in row:
                continue
            key = (row["arch"], row["dtype"])
            if key not in pipes:
                pipes[key] = as_meta_twin(build_pipeline(row["arch"], device="meta", dtype=DTYPES[row["dtype"]]))
            predicted = plan(
                row["arch"],
                row["height"],
                row["width"],
                method=row["recipe"],
                steps=row["steps"],
                dtype=row["dtype"],
                pipe=pipes[key],
            )
            measured = row["working_bytes"] / GIB if memory_valid else None
            working = predicted.working_bytes / GIB
            lines.append(
                f"| {Path(source).name} | {row['height']}² | {row['recipe']} | {row['steps']} | "
                f"{predicted.relative_flops:.2f} | {row['ratio_to_naive']:.2f} | {working:.2f} | "
                + (f"{measured:.2f} | {measured / working:.2f} |" if measured is not None else "— | — |")
            )
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
